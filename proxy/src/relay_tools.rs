//! The relay and tool definitions: every `tools/list` result from the server is read once
//! (digests, poisoning signs, annotations), compared with its baseline (a policy pin, the
//! agent's verdict, else the session's first-use book), and the treatment it implies is kept
//! per tool: hidden tools are left out of the list and their calls denied, `step_up` tools need
//! approval. `notifications/tools/list_changed` makes the proxy list the tools itself.

use std::collections::HashSet;
use std::time::SystemTime;

use serde_json::Value;
use serde_json::value::RawValue;
use thoth_policy::{Action, Decision, Integrity, Mode};
use thoth_proto::pins::server_key;

use crate::events::Record;
use crate::integrity::ListKind;
use crate::integrity::check;
use crate::integrity::verdict::{self, Baseline, MAX_TOOLS, Observed, State, Treatment};
use crate::policy::PolicyState;
use crate::relay::{Pending, Relay, track};

/// Longest tool name listed (MCP names are at most 128 characters); longer ones are hidden.
/// The agent refuses a list naming a longer tool, so a longer name must never reach it (one
/// would make it refuse the whole list, and pinning fall back to this session alone).
const MAX_NAME: usize = 256;

impl Relay {
    /// A `tools/list` result from the server: checked, then filtered for the client (hidden
    /// tools, and the policy's own `hide_unapproved`). Re-serialized only when a tool is left
    /// out.
    pub(crate) fn tools_listed(&self, line: Vec<u8>, kind: ListKind) -> Vec<u8> {
        let relax = kind == ListKind::ShownFirstPage;
        let mut msg = match serde_json::from_slice::<Value>(&line) {
            Ok(msg) => msg,
            // Valid JSON-RPC (classified) that cannot be read whole (nested too deep): its tools
            // cannot be checked, so none reach the client.
            Err(e) => return self.unreadable_list(&line, &e),
        };
        // The whole list: asked from its start, and no further page. Pages of a longer list
        // are each checked, but none of them says which pinned tools are gone.
        let complete = kind != ListKind::ShownLaterPage
            && msg.pointer("/result/nextCursor").is_none_or(Value::is_null);
        let Some(tools) = msg
            .pointer_mut("/result/tools")
            .and_then(Value::as_array_mut)
        else {
            return line;
        };
        let hidden = self.check_tools(tools, complete, relax);
        let policy = self.policy.get();
        let filters = policy.filters_tools();
        let before = tools.len();
        let mut seen = HashSet::new();
        tools.retain(|t| {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                return !filters;
            };
            // A name listed twice: only the first definition (the one checked) is shown, so a
            // second, unchecked description cannot stand in for it.
            if hidden.contains(name) || !seen.insert(name.to_owned()) {
                return false;
            }
            match &policy {
                PolicyState::Loaded(p) if filters => p.policy.tool_visible(&p.server, name),
                _ => true,
            }
        });
        if tools.len() == before {
            return line;
        }
        tracing::debug!(hidden = before - tools.len(), "filtered tools/list");
        let mut out = serde_json::to_vec(&msg).expect("serializing a JSON value into memory");
        out.push(b'\n');
        out
    }

    /// A `tools/list` answer that cannot be read whole: an error for the client instead.
    fn unreadable_list(&self, line: &[u8], e: &serde_json::Error) -> Vec<u8> {
        tracing::warn!(error = %e, "the server's tools/list result cannot be read; withheld");
        let id = match crate::message::classify(line) {
            Ok(crate::message::Message::Response { id, .. }) => Some(id),
            _ => None,
        };
        crate::respond::error(
            id,
            crate::message::code::INTERNAL_ERROR,
            &format!(
                "Thoth could not read the tools/list result of MCP server \"{}\" ({e}), so \
                 its tools could not be checked and none are shown",
                self.server_name
            ),
        )
    }

    /// Reads a list's tools, updates each one's treatment and raises the events; returns the
    /// names of the tools to hide.
    fn check_tools(&self, tools: &[Value], complete: bool, relax: bool) -> HashSet<String> {
        let policy = self.policy.get();
        let (integrity, version) = match &policy {
            PolicyState::Loaded(p) => (p.policy.integrity(&p.server), p.version.clone()),
            PolicyState::Missing { .. } => (
                Integrity {
                    on_tool_change: Default::default(),
                    on_suspicious_tool: Default::default(),
                    pins: None,
                    annotations: Default::default(),
                },
                "none".to_owned(),
            ),
        };
        let mut names = HashSet::new();
        let mut observed: Vec<Observed> = Vec::new();
        let mut extra = 0usize;
        let mut too_long = HashSet::new();
        for t in tools {
            if observed.len() >= MAX_TOOLS {
                // Not checked, so never shown (and, not in the book, never called).
                extra += 1;
                if let Some(name) = t.get("name").and_then(Value::as_str) {
                    too_long.insert(name.to_owned());
                }
                continue;
            }
            let Some(o) = verdict::observe(t) else {
                continue;
            };
            if o.digest.name.len() > MAX_NAME || o.digest.name.chars().any(char::is_control) {
                // No client needs it, no event could name it, and the agent would refuse the
                // whole list for it (control characters): never listed.
                too_long.insert(o.digest.name);
                continue;
            }
            if names.insert(o.digest.name.clone()) {
                observed.push(o);
            }
        }
        let client = self.events.client().unwrap_or_default().to_owned();
        let argv = self.server_argv.get().cloned().unwrap_or_default();
        let key = server_key(&client, &self.server_name, &argv);
        // Policy pins win for the tools they name.
        let mut bases: Vec<Option<Baseline>> = observed
            .iter()
            .map(|o| {
                integrity
                    .pins
                    .and_then(|p| p.get(&o.digest.name))
                    .map(|pin| verdict::from_policy_pin(o, pin.as_str()))
            })
            .collect();
        let mut agent_removed = None;
        if let Some(socket) = self.agent.get() {
            // Every tool, policy-pinned ones too (the agent keeps the server's inventory, and a
            // complete list lacking them would read as their removal); its verdict on those is
            // not used.
            let ask: Vec<&Observed> = observed.iter().collect();
            let req = check::request(
                &self.server_name,
                &client,
                &argv,
                &ask,
                &self.session_id,
                // Tools left out (too many, names too long): not a complete list.
                complete && extra == 0 && too_long.is_empty(),
            );
            match check::ask(socket, req) {
                Ok(v) => {
                    for (o, b) in observed.iter().zip(bases.iter_mut()) {
                        if b.is_some() {
                            continue;
                        }
                        let Some(tv) = v.tools.iter().find(|t| t.name == o.digest.name) else {
                            continue;
                        };
                        let Some(state) = State::parse(&tv.state) else {
                            continue;
                        };
                        *b = Some(Baseline {
                            state,
                            pinned: tv.pinned_digest.clone(),
                            source: tv.pin_source.clone(),
                            accepted: tv.accepted,
                            changes: tv.changes.clone(),
                            first_report: tv.first_report,
                        });
                    }
                    if complete {
                        agent_removed = Some(v.removed);
                    }
                }
                Err(why) => {
                    let mut st = self.state();
                    if !st.integrity.fallback_logged {
                        st.integrity.fallback_logged = true;
                        tracing::warn!(
                            "the agent cannot check tool definitions ({why}); this session \
                             compares them with the first list it saw"
                        );
                    }
                }
            }
        }
        let mut raises = Vec::new();
        if !too_long.is_empty() {
            tracing::warn!(
                count = too_long.len(),
                "the server lists tools whose names are over {MAX_NAME} bytes; they are hidden"
            );
        }
        let mut hidden = too_long;
        {
            let mut st = self.state();
            let book = &mut st.integrity;
            book.server_key = key.clone();
            if extra > 0 {
                // Tools past the cap are hidden; a call to one (or any unknown tool) is denied.
                book.overflowed = true;
            }
            if extra > 0 && !book.overflow_logged {
                book.overflow_logged = true;
                tracing::warn!(
                    extra,
                    "the server lists more than {MAX_TOOLS} tools; the rest are not pinned"
                );
            }
            for (o, b) in observed.iter().zip(bases) {
                let own = book.baseline(o);
                let base = b.unwrap_or(own);
                let approved = book.approved(&o.digest.name, &o.digest.digest);
                let (status, found) = verdict::judge(&key, o, &base, &integrity, approved);
                let now_hidden = matches!(status.treatment, Treatment::Hidden { .. });
                if !book.set(&o.digest.name, status, relax) {
                    // The book is full: this tool cannot be tracked, so it is not shown.
                    hidden.insert(o.digest.name.clone());
                }
                // What the book holds now decides (a later page cannot show a held tool).
                let held = book
                    .status(&o.digest.name)
                    .is_some_and(|s| matches!(s.treatment, Treatment::Hidden { .. }));
                if now_hidden || held {
                    hidden.insert(o.digest.name.clone());
                }
                for r in found {
                    if book.first_time(r.kind, &r.tool, &r.digest) {
                        raises.push(r);
                    }
                }
            }
            let listed: HashSet<&str> = observed.iter().map(|o| o.digest.name.as_str()).collect();
            let gone = book.list_read(complete, &listed);
            let gone = match agent_removed {
                Some(names) => names.into_iter().map(|n| (n, String::new())).collect(),
                None => gone,
            };
            for (tool, old) in gone {
                let r = verdict::removed(&key, &tool, &old, &integrity);
                if book.first_time(r.kind, &r.tool, &r.digest) {
                    raises.push(r);
                }
            }
        }
        let at = SystemTime::now();
        for r in raises {
            tracing::info!(tool = %r.tool, kind = ?r.kind, "{}", r.reason);
            self.events.push(Record::Integrity {
                at,
                kind: r.kind,
                tool: r.tool,
                action: r.action,
                rule: r.rule,
                reason: r.reason,
                policy_version: version.clone(),
                detail: r.detail,
            });
        }
        hidden
    }

    /// The server said its tools changed: the proxy lists them itself (its own request id,
    /// never forwarded to the client; one at a time, later changes coalesced).
    pub(crate) fn tools_list_changed(&self) {
        let Some(write) = self.server_in.get() else {
            tracing::debug!("tools changed, but the proxy cannot write to the server");
            return;
        };
        let id = {
            let mut st = self.state();
            if st.integrity.own_list {
                st.integrity.again = true;
                return;
            }
            st.integrity.own_lists += 1;
            let id = format!("{}{}", self.own_prefix, st.integrity.own_lists);
            let text = Value::String(id.clone()).to_string();
            let Ok(raw) = RawValue::from_string(text) else {
                return;
            };
            if !track(&mut st, &raw, Pending::OwnToolsList) {
                return;
            }
            st.integrity.own_list = true;
            id
        };
        let mut line = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})
            .to_string()
            .into_bytes();
        line.push(b'\n');
        // Not from this thread: it reads the server's output, and a server blocked writing
        // that output may not be reading its input.
        let write = std::sync::Arc::clone(write);
        let spawned = std::thread::Builder::new()
            .name("thoth-tools-list".into())
            .spawn(move || write(&line));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot list the tools again after list_changed");
            self.state().integrity.own_list = false;
        }
    }

    /// The policy's decision on a call with the tool's treatment applied (a hidden tool is
    /// denied, a `step_up` one needs approval, unless the decision already stops the call), and
    /// arguments DLP's block (unless the decision already denies).
    pub(crate) fn gate_call(
        &self,
        book: &crate::integrity::book::Book,
        tool: &str,
        d: Decision,
        args: Option<&crate::integrity::scanners::ArgScan>,
    ) -> Decision {
        let d = book.gate(tool, d);
        match args.and_then(|a| a.blocked.as_ref()) {
            Some(why) if d.action != Action::Deny => Decision {
                action: Action::Deny,
                mode: Mode::Block,
                rule: "dlp.arguments".to_owned(),
                reason: why.clone(),
                out_of_scope: false,
            },
            _ => d,
        }
    }

    /// The answer to the proxy's own `tools/list`: checked, not sent to the client.
    pub(crate) fn own_tools_listed(&self, line: Vec<u8>, result: bool) {
        if result {
            let _ = self.tools_listed(line, ListKind::Own);
        }
        let again = {
            let mut st = self.state();
            st.integrity.own_list = false;
            std::mem::take(&mut st.integrity.again)
        };
        if again {
            self.tools_list_changed();
        }
    }
}
