//! Verifying chains: a file of event lines (or stored events, one at a time) checked link by
//! link with [`crate::chain`]'s hashing, every break reported and verification going on after
//! it, signed chain heads matched against the chain and, given the CA, checked.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use serde_json::Value;

use crate::canonical::to_canonical;
use crate::chain::{GENESIS, MAX_LINE_BYTES, hash_of};
use crate::event::EventType;
use crate::evidence::{SignedHead, TrustAnchors};

/// Where and why a chain broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ChainBreak {
    /// 1-based line number in the file.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// What a verification saw. A break does not end it: the chain that broke goes on in a new
/// epoch from the event after the break, every other chain is unaffected, and every break is
/// listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Every break found, in file order.
    pub breaks: Vec<ChainBreak>,
    /// Chain events verified (controller records not counted).
    pub events: u64,
    /// Last sequence number per chain (`agentId`), in its latest epoch.
    pub chains: BTreeMap<String, u64>,
    /// First sequence number verified per chain in its latest epoch (1 unless it broke).
    pub first: BTreeMap<String, u64>,
    /// Per chain, the last sequence number a verified signed head covers (latest epoch).
    pub signed: BTreeMap<String, u64>,
    /// Events no verified signed head covers (after a chain's last head, or in a chain with none).
    pub unsigned: u64,
    /// Signed heads (`CHAIN_HEAD` records) verified.
    pub heads: u64,
    /// Whether the heads' certificates were checked against a CA.
    pub ca_checked: bool,
    /// Chains that started again at seq 1 (agent, line): a spool lost or restored, alerted by the
    /// controller. The events before and after are each verified.
    pub restarts: Vec<(String, usize)>,
    /// `CHAIN_ALERT` records of the controller (line, detail): breaks it saw at ingest.
    pub alerts: Vec<(usize, String)>,
    /// Other controller records (not on any agent chain).
    pub controller_records: u64,
}

/// The overall result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At least one chain is broken (see [`ChainReport::breaks`]); what is around the breaks was
    /// verified all the same.
    Broken,
    /// Every event is covered by a signed head whose certificate chains to the given CA.
    Ok,
    /// Every event is covered by a signed head, but no CA was given: the certificates are not
    /// known to be the fleet's.
    SignedUnanchored,
    /// Some events are not covered by any signed head: they are hash-linked only (unkeyed), so
    /// anyone who can write the file could have rewritten them.
    Unsigned,
}

impl ChainReport {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        if !self.breaks.is_empty() {
            Verdict::Broken
        } else if self.unsigned > 0 {
            Verdict::Unsigned
        } else if !self.ca_checked && self.events > 0 {
            Verdict::SignedUnanchored
        } else {
            Verdict::Ok
        }
    }
}

impl ChainReport {
    /// The verdict's word and the text that explains it (`source`: the file or store checked).
    pub fn describe(&self, source: &str) -> Vec<String> {
        let n = format!(
            "{} events on {} chain(s) in {source}",
            self.events,
            self.chains.len()
        );
        let mut out = vec![match self.verdict() {
            Verdict::Broken => format!(
                "BROKEN: {} break(s) in {source}; around them, {n} verified, {} of them covered \
                 by no signed chain head",
                self.breaks.len(),
                self.unsigned
            ),
            Verdict::Ok if self.events == 0 => format!("OK: no events in {source}"),
            Verdict::Ok => format!(
                "OK: {n}; every event is covered by a signed chain head whose certificate chains \
                 to the CA and names its agent"
            ),
            Verdict::SignedUnanchored => format!(
                "SIGNED, CA NOT CHECKED: {n}; every event is covered by a signed chain head, but \
                 the certificates were not checked against a CA: pass --ca (the controller's CA) \
                 to prove they are the fleet's agents"
            ),
            Verdict::Unsigned => format!(
                "UNSIGNED: {n} hash-link without a break, but {} event(s) are covered by no \
                 signed chain head: the hash chain alone is unkeyed, so whoever could write the \
                 data could have edited and re-hashed them",
                self.unsigned
            ),
        }];
        for (agent, seq) in &self.chains {
            let first = self.first.get(agent).copied().unwrap_or(1);
            let signed = self.signed.get(agent).copied().unwrap_or(0);
            out.push(if signed == *seq {
                format!("  {agent}: seq {first}..{seq}, signed through seq {seq}")
            } else if signed < first {
                format!("  {agent}: seq {first}..{seq}, no signed head")
            } else {
                format!(
                    "  {agent}: seq {first}..{seq}, signed through seq {signed}; seq {}..{seq} unsigned",
                    signed + 1
                )
            });
        }
        for (agent, line) in &self.restarts {
            out.push(format!(
                "  restart: the chain of {agent} starts again at seq 1 on line {line} (its spool \
                 was lost or restored)"
            ));
        }
        for (line, detail) in &self.alerts {
            out.push(format!("  controller alert (line {line}): {detail}"));
        }
        if self.verdict() == Verdict::Unsigned {
            out.push(if self.heads == 0 {
                "Note: no signed chain heads at all. A file a standalone proxy wrote (thoth run \
                 --events, no agent) never has any: its chain shows accidental damage, not a \
                 deliberate rewrite. Events the controller stored come with signed heads: their \
                 absence there means the heads were removed."
                    .to_owned()
            } else {
                "Note: events after a chain's last signed head are not proven. The controller \
                 stores a head right after each batch, so only data cut between a batch and its \
                 head ends unsigned without an edit."
                    .to_owned()
            });
        }
        out
    }

    /// The report as JSON (`ok` only for [`Verdict::Ok`]; `verdict` names it).
    pub fn to_json(&self) -> Value {
        let verdict = match self.verdict() {
            Verdict::Broken => "broken",
            Verdict::Ok => "ok",
            Verdict::SignedUnanchored => "signed_ca_not_checked",
            Verdict::Unsigned => "unsigned",
        };
        let mut out = serde_json::json!({
            "ok": self.verdict() == Verdict::Ok,
            "broken": !self.breaks.is_empty(),
            "breaks": self.breaks.iter().map(|b| serde_json::json!({"line": b.line, "reason": b.reason})).collect::<Vec<_>>(),
            "verdict": verdict,
            "events": self.events,
            "chains": self.chains,
            "signedThrough": self.signed,
            "unsigned": self.unsigned,
            "heads": self.heads,
            "caChecked": self.ca_checked,
            "restarts": self.restarts.iter().map(|(a, l)| serde_json::json!({"agentId": a, "line": l})).collect::<Vec<_>>(),
            "alerts": self.alerts.iter().map(|(l, d)| serde_json::json!({"line": l, "detail": d})).collect::<Vec<_>>(),
        });
        // The first break, where a reader of one break looks for it.
        if let Some(b) = self.breaks.first() {
            out["line"] = b.line.into();
            out["reason"] = b.reason.clone().into();
        }
        out
    }
}

/// Verifies every chain in a file of event lines (one chain per `agentId`; chains may be
/// interleaved, as when several proxies append to one file). Each chain must start at `seq` 1
/// with the genesis `prevHash` and continue without gaps. Signed heads are checked without a CA
/// (see [`verify_evidence`]).
pub fn verify_lines<R: BufRead>(reader: R) -> Result<ChainReport, ChainBreak> {
    verify_evidence(reader, None)
}

/// Like [`verify_lines`], and every `CHAIN_HEAD` record must match its chain, its signature
/// must verify with its certificate, which must name the agent and, with `ca`, chain to it.
/// Fails with the first break (see [`verify_report`] for all of them).
pub fn verify_evidence<R: BufRead>(
    reader: R,
    ca: Option<&TrustAnchors>,
) -> Result<ChainReport, ChainBreak> {
    let report = verify_report(reader, ca);
    match report.breaks.first() {
        Some(b) => Err(b.clone()),
        None => Ok(report),
    }
}

/// Verifies a whole file as [`verify_evidence`] does, but a break does not stop it: the chain
/// that broke goes on in a new epoch, every break is listed in the report
/// ([`Verdict::Broken`]), and what is around the breaks, for every agent, is verified all the
/// same. A line too long is a break and skipped; a read error is a break that ends the file.
pub fn verify_report<R: BufRead>(mut reader: R, ca: Option<&TrustAnchors>) -> ChainReport {
    let mut v = Verifier::new(ca);
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    let read_error = |v: &mut Verifier<'_>, line: usize, e: std::io::Error| {
        v.report.breaks.push(ChainBreak {
            line,
            reason: format!("read error: {e}"),
        });
    };
    loop {
        buf.clear();
        let n = match reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(e) => {
                read_error(&mut v, line_no + 1, e);
                break;
            }
        };
        if n == 0 {
            break;
        }
        line_no += 1;
        if buf.last() != Some(&b'\n') {
            if buf.len() <= MAX_LINE_BYTES {
                v.report.breaks.push(ChainBreak {
                    line: line_no,
                    reason: "last line is incomplete (no newline): the file was cut or is still \
                             being written"
                        .into(),
                });
                break;
            }
            v.report.breaks.push(ChainBreak {
                line: line_no,
                reason: format!("line is longer than {MAX_LINE_BYTES} bytes: not checked"),
            });
            // Skip the rest of it, a bounded piece at a time.
            loop {
                buf.clear();
                match reader
                    .by_ref()
                    .take(MAX_LINE_BYTES as u64)
                    .read_until(b'\n', &mut buf)
                {
                    Ok(0) => break,
                    Ok(_) if buf.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                    Err(e) => {
                        read_error(&mut v, line_no, e);
                        return v.finish();
                    }
                }
            }
            continue;
        }
        buf.pop();
        let _ = v.push(line_no, &buf);
    }
    v.finish()
}

/// One agent chain in the current epoch.
#[derive(Default)]
struct AgentChain {
    /// Seq of `hashes[0]`.
    base: u64,
    /// Hash of the event at seq `base + i` (raw SHA-256): the events verified in this epoch.
    hashes: Vec<[u8; 32]>,
    /// Last seq a verified head covers.
    signed: u64,
    /// The seq and hash the next event follows, when not the last of `hashes` (an epoch that
    /// starts after a refused or altered event: its claimed hash).
    tip: Option<(u64, String)>,
}

impl AgentChain {
    /// The seq and hash the next event must follow.
    fn tip(&self) -> (u64, String) {
        match (&self.tip, self.hashes.last()) {
            (Some(t), _) => t.clone(),
            (None, Some(h)) => (self.base + self.hashes.len() as u64 - 1, hex::encode(h)),
            (None, None) => (0, GENESIS.to_owned()),
        }
    }

    /// Events of the epoch no verified head covers.
    fn unsigned(&self) -> u64 {
        let len = self.hashes.len() as u64;
        let covered = if self.signed >= self.base && len > 0 {
            (self.signed - self.base + 1).min(len)
        } else {
            0
        };
        len - covered
    }

    fn append(&mut self, seq: u64, hash: [u8; 32]) {
        if self.hashes.is_empty() {
            self.base = seq;
        }
        self.hashes.push(hash);
        self.tip = None;
    }
}

/// Verifies records one at a time (lines of a file, or rows of a store, in commit order).
pub struct Verifier<'a> {
    ca: Option<&'a TrustAnchors>,
    chains: BTreeMap<String, AgentChain>,
    /// Controller alerts naming an agent's seq: (agent, seq) → the alert's line.
    alerted: BTreeMap<(String, u64), usize>,
    report: ChainReport,
}

impl<'a> Verifier<'a> {
    /// A verifier; with `ca`, signed heads' certificates must chain to it.
    pub fn new(ca: Option<&'a TrustAnchors>) -> Self {
        Verifier {
            ca,
            chains: BTreeMap::new(),
            alerted: BTreeMap::new(),
            report: ChainReport {
                ca_checked: ca.is_some(),
                ..ChainReport::default()
            },
        }
    }

    /// Checks one record (without its newline); `line` is its 1-based position, for reports.
    /// A break is kept in the report and also returned; the verifier goes on either way (the
    /// chain that broke starts a new epoch after it).
    pub fn push(&mut self, line: usize, bytes: &[u8]) -> Result<(), ChainBreak> {
        self.push_from(line, bytes, None)
    }

    /// Checks one record of a store, as [`Verifier::push`] does, except that what the record
    /// is comes from where it came from, never from its content: whether it is the controller's
    /// own record (a `CHAIN_ALERT`, a `CHAIN_HEAD`) from `controller` (the store wrote it
    /// itself), and an agent's event must name the agent that uploaded it (`agent`). An agent's
    /// record that claims to be the controller's, or another agent's event, is a break that
    /// touches no other chain.
    pub fn push_stored(
        &mut self,
        line: usize,
        bytes: &[u8],
        controller: bool,
        agent: &str,
    ) -> Result<(), ChainBreak> {
        self.push_from(line, bytes, Some((controller, agent)))
    }

    fn push_from(
        &mut self,
        line: usize,
        bytes: &[u8],
        stored: Option<(bool, &str)>,
    ) -> Result<(), ChainBreak> {
        let r = self.record(line, bytes, stored);
        if let Err(b) = &r {
            self.report.breaks.push(b.clone());
        }
        r
    }

    /// Ends the agent's epoch (its unproven events counted) and starts a new one.
    fn new_epoch(&mut self, agent: &str) -> &mut AgentChain {
        if let Some(old) = self.chains.remove(agent) {
            self.report.unsigned += old.unsigned();
        }
        self.chains.entry(agent.to_owned()).or_default()
    }

    /// Why a break at seqs `lo..=hi` of `agent` may have come about.
    fn explain(&self, agent: &str, lo: u64, hi: u64) -> String {
        let (lo, hi) = (lo.min(hi), hi.max(lo));
        match self
            .alerted
            .range((agent.to_owned(), lo)..=(agent.to_owned(), hi))
            .next()
        {
            Some((_, l)) => format!(
                " (the controller alerted it at ingest, line {l}); the chain goes on from here"
            ),
            None => "; the chain goes on from here".to_owned(),
        }
    }

    /// `stored`: for a store's row, whether the store wrote it itself and the agent that
    /// uploaded it (None: a file's line, taken for what its content says).
    fn record(
        &mut self,
        line: usize,
        bytes: &[u8],
        stored: Option<(bool, &str)>,
    ) -> Result<(), ChainBreak> {
        let brk = |reason: String| ChainBreak { line, reason };
        let mut value: Value = serde_json::from_slice(bytes).map_err(|e| {
            brk(if e.is_eof() {
                "the line is cut short: a writer stopped mid-line (crash, full disk) or the \
                     line was truncated"
                    .into()
            } else {
                format!("not a JSON event ({e}): the line was altered")
            })
        })?;
        let obj = value
            .as_object_mut()
            .ok_or_else(|| brk("not a JSON object".into()))?;
        // A controller record (a CHAIN_ALERT, a CHAIN_HEAD) is on no agent chain: it has no hash.
        // In a store, where it came from says so; in a file, its content.
        let from_controller = stored.map(|(c, _)| c).unwrap_or_else(|| {
            !obj.contains_key("hash")
                && obj.get("sourceType").and_then(Value::as_str) == Some("controller")
        });
        if from_controller {
            return self.controller_record(line, &value);
        }
        let field = |obj: &serde_json::Map<String, Value>, k: &str| -> Result<String, ChainBreak> {
            obj.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| brk(format!("field \"{k}\" is missing or not a string")))
        };
        let hash = field(obj, "hash")?;
        let prev = field(obj, "prevHash")?;
        let agent = field(obj, "agentId")?;
        if let Some((_, uploader)) = stored
            && uploader != agent
        {
            return Err(brk(format!(
                "an event stored as agent \"{uploader}\"'s names agent \"{agent}\": not \
                 verified, and no chain of either is touched by it"
            )));
        }
        let seq = obj
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| brk("field \"seq\" is missing or not a number".into()))?;
        // An altered event: not verified; its chain goes on from the hash it claims.
        let altered = |v: &mut Self, reason: String| {
            v.new_epoch(&agent).tip = Some((seq, hash.clone()));
            Err(brk(reason))
        };
        if to_canonical(&value) != bytes {
            let why = self.explain(&agent, seq, seq);
            return altered(
                self,
                format!(
                    "seq {seq} (agent \"{agent}\") is not in canonical form: the line was \
                     altered{why}"
                ),
            );
        }
        let (last, want_prev) = self
            .chains
            .get(&agent)
            .map_or((0, GENESIS.to_owned()), AgentChain::tip);
        let mut link = None;
        if seq == 1 && prev == GENESIS && last > 0 {
            // The agent's chain started again (its spool was lost): a new epoch.
            self.new_epoch(&agent);
            self.report.restarts.push((agent.clone(), line));
        } else if seq != last + 1 {
            link = Some(format!(
                "chain of agent \"{agent}\" jumps from seq {last} to {seq}: events are missing \
                 or out of order{}",
                self.explain(&agent, last + 1, seq)
            ));
        } else if prev != want_prev {
            link = Some(format!(
                "prevHash of seq {seq} (agent \"{agent}\") does not match the previous event's \
                 hash: an earlier event was altered or removed{}",
                self.explain(&agent, seq, seq)
            ));
        }
        let obj = value.as_object_mut().expect("checked above");
        obj.remove("hash");
        let computed = hash_of(&prev, &value).ok_or_else(|| brk("prevHash is not hex".into()));
        let mut raw = [0u8; 32];
        let own = match computed {
            Ok(c) if c == hash && hex::decode_to_slice(&hash, &mut raw).is_ok() => Ok(raw),
            Ok(_) => Err(format!(
                "hash of seq {seq} (agent \"{agent}\") does not match its content: the event was \
                 altered{}",
                self.explain(&agent, seq, seq)
            )),
            Err(e) => Err(e.reason),
        };
        let raw = match (own, link) {
            (Err(why), link) => {
                let reason = link.map_or(why.clone(), |l| format!("{l}; and {why}"));
                return altered(self, reason);
            }
            (Ok(raw), Some(l)) => {
                // A new epoch starts at this event (it hashes correctly over its own prevHash).
                self.new_epoch(&agent).append(seq, raw);
                self.report.first.insert(agent.clone(), seq);
                self.report.chains.insert(agent, seq);
                self.report.events += 1;
                return Err(brk(l));
            }
            (Ok(raw), None) => raw,
        };
        let chain = self.chains.entry(agent.clone()).or_default();
        if chain.hashes.is_empty() {
            self.report.first.insert(agent.clone(), seq);
        }
        chain.append(seq, raw);
        self.report.chains.insert(agent, seq);
        self.report.events += 1;
        Ok(())
    }

    fn controller_record(&mut self, line: usize, v: &Value) -> Result<(), ChainBreak> {
        let brk = |reason: String| ChainBreak { line, reason };
        match v
            .get("eventType")
            .and_then(Value::as_str)
            .and_then(EventType::parse)
        {
            Some(EventType::ChainHead) => {
                let head = SignedHead::from_record(v).map_err(|e| brk(e.to_string()))?;
                let who = format!(
                    "signed head of agent \"{}\" at seq {}",
                    head.agent_id, head.seq
                );
                let Some(chain) = self.chains.get_mut(&head.agent_id) else {
                    return Err(brk(format!(
                        "{who}: the chain before it reaches only seq 0: signed events were \
                         removed"
                    )));
                };
                let (tip, tip_hash) = chain.tip();
                let len = chain.hashes.len() as u64;
                let have = if head.seq >= chain.base && head.seq < chain.base + len {
                    hex::encode(chain.hashes[(head.seq - chain.base) as usize])
                } else if head.seq == tip {
                    // The claimed hash of a refused or altered event: nothing verified to cover.
                    tip_hash
                } else if head.seq > tip || head.seq == 0 {
                    return Err(brk(format!(
                        "{who}: the chain before it reaches only seq {tip}: signed events were \
                         removed"
                    )));
                } else {
                    return Err(brk(format!(
                        "{who}: it is before the chain's current epoch (from seq {}, after a \
                         break): it cannot be checked",
                        chain.base
                    )));
                };
                if have != head.hash {
                    return Err(brk(format!(
                        "{who}: the agent signed hash {} but the chain has {have} there: the \
                         events were altered (and re-hashed)",
                        head.hash
                    )));
                }
                head.check(self.ca)
                    .map_err(|e| brk(format!("{who}: {e}")))?;
                chain.signed = chain.signed.max(head.seq);
                if len > 0 && chain.signed >= chain.base {
                    self.report
                        .signed
                        .insert(head.agent_id.clone(), chain.signed);
                }
                self.report.heads += 1;
            }
            Some(EventType::ChainAlert) => {
                let detail = match v.get("detail") {
                    Some(Value::String(s)) => s.clone(),
                    Some(d) => d.to_string(),
                    None => String::new(),
                };
                self.report.alerts.push((line, detail));
                let agent = v.get("agentId").and_then(Value::as_str);
                let seq = v.get("seq").and_then(Value::as_u64);
                if let (Some(agent), Some(seq)) = (agent, seq) {
                    self.alerted.insert((agent.to_owned(), seq), line);
                    let hash = v.get("eventHash").and_then(Value::as_str);
                    if v.get("alert").and_then(Value::as_str) == Some("refused")
                        && let Some(hash) = hash
                    {
                        return self.refused(line, agent, seq, hash);
                    }
                }
            }
            _ => self.report.controller_records += 1,
        }
        Ok(())
    }

    /// The controller refused the agent's event `seq` (hash as claimed) and did not store it:
    /// when it is the next of the chain, the chain has a hole there (a break), and goes on after
    /// it in a new epoch. Each refused seq is a break of its own (consecutive refusals are not
    /// merged: forged refusals put in place of deleted events each count).
    fn refused(
        &mut self,
        line: usize,
        agent: &str,
        seq: u64,
        hash: &str,
    ) -> Result<(), ChainBreak> {
        let (tip, _) = self
            .chains
            .get(agent)
            .map_or((0, String::new()), AgentChain::tip);
        if seq != tip + 1 {
            return Ok(());
        }
        self.new_epoch(agent).tip = Some((seq, hash.to_owned()));
        Err(ChainBreak {
            line,
            reason: format!(
                "seq {seq} of agent \"{agent}\" missing: the controller refused and did not store \
                 it (alert on line {line}); the chain goes on after it, and no signed head after \
                 it covers the events before it"
            ),
        })
    }

    /// The report, once every record was pushed.
    pub fn finish(mut self) -> ChainReport {
        for c in self.chains.values() {
            self.report.unsigned += c.unsigned();
        }
        self.report
    }
}
