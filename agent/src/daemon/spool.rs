//! The agent's durable event spool: the agent (not the user-owned proxy) puts every event on
//! its hash chain and appends it to segment files, each record length-prefixed and checksummed,
//! with group commit (fsync at most every ~50 ms). Bounded: past `max_bytes` the oldest segments
//! go, and the loss is counted and recorded as an `EVENTS_DROPPED` event. A corrupt record is
//! detected, reported and skipped, never passed on as valid. Acknowledged segments are deleted.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload` (the canonical event JSON).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use thoth_proto::{Chain, Event};

/// Largest record accepted (an event with a 16 KiB content cap is far smaller).
pub const MAX_RECORD: usize = 4 << 20;

/// One segment file.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Valid records.
    pub records: u64,
    /// Corrupt records (or corrupt segment tails) skipped.
    pub corrupt: Vec<String>,
    /// Bytes of a torn final record cut off (an unsynced tail from a crash).
    pub truncated_bytes: u64,
}

/// The spool.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    current: Option<File>,
    chain: Chain,
    acked: u64,
    synced_seq: u64,
    written_seq: u64,
    dirty: bool,
    /// Events lost to the size bound, not yet recorded as EVENTS_DROPPED.
    pub lost_pending: u64,
    /// Events lost to the size bound, in total.
    pub lost_total: u64,
    /// The most recent records (seq, bytes), so uploading does not re-read segment files.
    cache: VecDeque<(u64, Vec<u8>)>,
    cache_bytes: usize,
    /// Records written but not yet flushed to the file. A write that fails part-way drains what
    /// reached the file, so a retry goes on from the exact byte where it stopped: the segment is
    /// never rewritten, never holds a record twice.
    buffer: Vec<u8>,
    cursor: Option<ReadCursor>,
    /// Tests: bytes the "disk" still takes (writes past it fail part-way, like a full disk).
    #[cfg(test)]
    pub(crate) space: Option<std::sync::Arc<TestDisk>>,
}

/// Most bytes held in memory while the segment cannot be written; past it, appends are refused.
const MAX_BUFFER: usize = 8 << 20;

/// A record set aside because the controller keeps refusing it.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Its event id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its size.
    pub bytes: usize,
    /// Where its copy is kept (`None`: it could not be written).
    pub file: Option<PathBuf>,
    /// Older copies deleted to keep the directory at [`QUARANTINE_KEPT`] files (this time).
    pub rotated_out: usize,
}

/// Quarantined copies kept: past it the oldest are deleted.
pub const QUARANTINE_KEPT: usize = 64;

/// Most bytes of recent records kept in memory for upload.
const CACHE_BYTES: usize = 32 << 20;

fn seg_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.log")
}

/// A segment read back: payloads, corrupt notes, offset after the last good record, torn tail.
type SegmentRead = (Vec<Vec<u8>>, Vec<String>, u64, bool);

/// Reads every valid record of a segment.
fn read_segment(path: &Path) -> std::io::Result<SegmentRead> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let mut at = 0usize;
    let mut torn = false;
    while at < data.len() {
        if data.len() - at < 8 {
            torn = true;
            break;
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            notes.push(format!(
                "{}: a record length at byte {at} is impossible ({len}); the rest of the segment is skipped",
                path.display()
            ));
            at = data.len();
            break;
        }
        if data.len() - at - 8 < len {
            torn = true;
            break;
        }
        let payload = &data[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            notes.push(format!(
                "{}: the record at byte {at} fails its checksum and is skipped",
                path.display()
            ));
        } else {
            out.push(payload.to_vec());
        }
        at += 8 + len;
    }
    Ok((out, notes, at as u64, torn))
}

/// The chain position of a record: only `seq` and `hash` are read (the rest of the record is
/// skipped, not built).
fn seq_hash(payload: &[u8]) -> Option<(u64, thoth_proto::Hash)> {
    #[derive(serde::Deserialize)]
    struct Position<'a> {
        seq: u64,
        #[serde(borrow)]
        hash: std::borrow::Cow<'a, str>,
    }
    let p: Position<'_> = serde_json::from_slice(payload).ok()?;
    Some((p.seq, thoth_proto::chain::parse_hash(&p.hash)?))
}

impl Spool {
    /// Opens (recovering) the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<(Spool, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let acked = std::fs::read_to_string(dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
            })
            .collect();
        names.sort();
        let mut rec = Recovery::default();
        let mut segments = VecDeque::new();
        let mut chain_seq = acked;
        let mut chain_head: Option<thoth_proto::Hash> = None;
        let last_index = names.len().saturating_sub(1);
        for (i, path) in names.iter().enumerate() {
            let (records, notes, good_end, torn) = read_segment(path)?;
            rec.corrupt.extend(notes);
            if torn {
                let len = std::fs::metadata(path)?.len();
                if i == last_index {
                    // The unsynced tail of the last write before a crash: cut it off.
                    OpenOptions::new()
                        .write(true)
                        .open(path)?
                        .set_len(good_end)?;
                    rec.truncated_bytes += len - good_end;
                } else {
                    rec.corrupt.push(format!(
                        "{}: a torn record in a closed segment",
                        path.display()
                    ));
                }
            }
            rec.records += records.len() as u64;
            // The first and last records that say where they are on the chain (a record that does
            // not is reported by the uploader; it must not cost the rest of its segment).
            let first = records.iter().find_map(|r| seq_hash(r)).map(|s| s.0);
            let last = records.iter().rev().find_map(|r| seq_hash(r));
            match (first, last) {
                (Some(first), Some((last, hash))) => {
                    chain_seq = chain_seq.max(last);
                    chain_head = Some(hash);
                    segments.push_back(Segment {
                        path: path.clone(),
                        first_seq: first,
                        last_seq: last,
                        bytes: std::fs::metadata(path)?.len(),
                    });
                }
                _ => {
                    if !records.is_empty() {
                        rec.corrupt.push(format!(
                            "{}: {} records, none with a readable seq and hash; segment removed",
                            path.display(),
                            records.len()
                        ));
                    }
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let head_file = dir.join("head");
        let chain = match chain_head {
            Some(h) => Chain::resume(chain_seq, h),
            None => {
                // Nothing unacknowledged on disk: continue after what the controller has.
                let saved = std::fs::read_to_string(&head_file).ok();
                match saved.as_deref().and_then(|s| s.trim().split_once(' ')) {
                    Some((seq, hash)) => {
                        match (seq.parse::<u64>(), thoth_proto::chain::parse_hash(hash)) {
                            (Ok(seq), Some(hash)) => Chain::resume(seq, hash),
                            _ => Chain::new(),
                        }
                    }
                    _ => Chain::new(),
                }
            }
        };
        let segment_bytes = (max_bytes / 8).clamp(64 << 10, 8 << 20);
        let synced = chain.seq();
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                max_bytes,
                segment_bytes,
                segments,
                current: None,
                chain,
                acked,
                synced_seq: synced,
                written_seq: synced,
                dirty: false,
                lost_pending: 0,
                lost_total: 0,
                cache: VecDeque::new(),
                cache_bytes: 0,
                buffer: Vec::with_capacity(1 << 20),
                cursor: None,
                #[cfg(test)]
                space: None,
            },
            rec,
        ))
    }

    /// The last sequence number given out.
    pub fn seq(&self) -> u64 {
        self.chain.seq()
    }

    /// The chain head (hash of the last event).
    pub fn head(&self) -> String {
        self.chain.head_hex()
    }

    /// The highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The highest sequence number known durable.
    pub fn synced(&self) -> u64 {
        self.synced_seq
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    fn open_current(&mut self, first_seq: u64) -> std::io::Result<()> {
        let path = self.dir.join(seg_name(first_seq));
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        // Every user's tool arguments and results: the agent's alone.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path)?;
        self.segments.push_back(Segment {
            path,
            first_seq,
            last_seq: first_seq - 1,
            bytes: 0,
        });
        self.current = Some(file);
        Ok(())
    }

    /// Chains one event (sets its `seq`, `prevHash` and `hash`, serializing it once) and appends
    /// its line as an opaque record; not yet durable until [`Spool::sync`]. An error means the
    /// event was not taken (nothing of it is on the chain).
    pub fn append(&mut self, event: &mut Event<'_>) -> std::io::Result<u64> {
        if self.buffer.len() >= MAX_BUFFER {
            // The file has not taken what is held: take nothing more until it does.
            self.flush()?;
        }
        let need_new = match self.segments.back() {
            None => true,
            Some(s) => self.current.is_none() || s.bytes >= self.segment_bytes,
        };
        if need_new {
            // Close the previous segment durably before the next one starts.
            self.sync()?;
            self.open_current(self.chain.seq() + 1)?;
        }
        let line = self.chain.seal(event);
        let seq = self.chain.seq();
        let start = self.buffer.len();
        self.buffer
            .extend_from_slice(&(line.len() as u32).to_le_bytes());
        self.buffer
            .extend_from_slice(&crc32fast::hash(&line).to_le_bytes());
        self.buffer.extend_from_slice(&line);
        let rec_len = self.buffer.len() - start;
        if self.buffer.len() >= 1 << 20 {
            // The record is on the chain and held: a failed write is retried by the next flush
            // or sync (which report it), so it must not fail this append.
            let _ = self.flush();
        }
        let seg = self.segments.back_mut().expect("a current segment");
        seg.bytes += rec_len as u64;
        seg.last_seq = seq;
        self.written_seq = seq;
        self.dirty = true;
        self.cache_bytes += line.len();
        self.cache.push_back((seq, line));
        while self.cache_bytes > CACHE_BYTES {
            match self.cache.pop_front() {
                Some((_, l)) => self.cache_bytes -= l.len(),
                None => break,
            }
        }
        self.enforce_bound();
        Ok(seq)
    }

    /// Writes the held bytes to the current segment. What reached the file is drained as it
    /// goes, so after a partial write (disk full) the held bytes are exactly what is missing.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.buffer.is_empty() {
            let Some(f) = self.current.as_mut() else {
                self.buffer.clear();
                break;
            };
            #[cfg(test)]
            let r = match &self.space {
                Some(space) => limited_write(f, &self.buffer, space),
                None => f.write(&self.buffer),
            };
            #[cfg(not(test))]
            let r = f.write(&self.buffer);
            match r {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.buffer.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes everything written durable (fdatasync).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flush()?;
        if self.dirty {
            if let Some(f) = &self.current {
                f.sync_data()?;
            }
            self.dirty = false;
        }
        self.synced_seq = self.written_seq;
        Ok(())
    }

    /// The size bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The oldest unacknowledged seq still held (records before it were acknowledged or lost).
    pub fn first_held(&self) -> u64 {
        let first = self
            .segments
            .front()
            .map_or(self.chain.seq() + 1, |s| s.first_seq);
        first.max(self.acked + 1)
    }

    /// Each segment as (first seq, last seq, bytes), oldest first: the size bound deletes whole
    /// segments from the front, so this is what deciding who it would delete must look at.
    pub fn segment_spans(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.segments
            .iter()
            .map(|s| (s.first_seq, s.last_seq, s.bytes))
    }

    fn enforce_bound(&mut self) {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let old = self.segments.pop_front().expect("len > 1");
            let unacked_first = old.first_seq.max(self.acked + 1);
            if old.last_seq >= unacked_first {
                let lost = old.last_seq - unacked_first + 1;
                self.lost_pending += lost;
                self.lost_total += lost;
            }
            let _ = std::fs::remove_file(&old.path);
            while self.cache.front().is_some_and(|(s, _)| *s <= old.last_seq) {
                if let Some((_, l)) = self.cache.pop_front() {
                    self.cache_bytes -= l.len();
                }
            }
        }
    }

    /// Records that the controller committed every event up to `seq`; deletes segments wholly
    /// acknowledged.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq.min(self.chain.seq());
        thoth_endpoint::state::write_atomic(
            &self.dir.join("acked"),
            format!("{}\n", self.acked).as_bytes(),
            0o600,
        )?;
        thoth_endpoint::state::write_atomic(
            &self.dir.join("head"),
            format!("{} {}\n", self.chain.seq(), self.chain.head_hex()).as_bytes(),
            0o600,
        )?;
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.last_seq <= self.acked)
        {
            let s = self.segments.pop_front().expect("non-empty");
            let _ = std::fs::remove_file(&s.path);
        }
        Ok(())
    }

    /// Durable, unacknowledged events after `after`, in order, at most `max` (payloads with
    /// their seq). Corrupt records are skipped (and were reported at recovery).
    pub fn read_after(&mut self, after: u64, max: usize) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        self.read_after_bytes(after, max, usize::MAX)
    }

    /// Sets the record `seq` aside: a copy goes to `quarantine/SEQ.json` in the spool directory
    /// (0600); the oldest copies are deleted so at most [`QUARANTINE_KEPT`] remain. `None` when
    /// the record is not readable any more.
    pub fn quarantine(&mut self, seq: u64) -> std::io::Result<Option<Quarantined>> {
        let Some((s, payload)) = self.read_after(seq - 1, 1)?.into_iter().next() else {
            return Ok(None);
        };
        if s != seq {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let dir = self.dir.join("quarantine");
        std::fs::create_dir_all(&dir)?;
        let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        old.sort();
        let mut rotated_out = 0;
        for p in &old[..old.len().saturating_sub(QUARANTINE_KEPT - 1)] {
            if std::fs::remove_file(p).is_ok() {
                rotated_out += 1;
            }
        }
        let file = dir.join(format!("{seq:020}.json"));
        let file = thoth_endpoint::state::write_atomic(&file, &payload, 0o600)
            .is_ok()
            .then_some(file);
        Ok(Some(Quarantined {
            event_id: text("eventId"),
            event_type: text("eventType"),
            bytes: payload.len(),
            file,
            rotated_out,
        }))
    }

    /// [`Spool::read_after`], stopping once the events read hold `max_bytes` (at least one).
    pub fn read_after_bytes(
        &mut self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> std::io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let full = |bytes: usize, next: usize, n: usize| n > 0 && bytes + next > max_bytes;
        // Recent records come from memory.
        if let Some((first, _)) = self.cache.front()
            && *first <= after + 1
        {
            let skip = (after + 1 - first) as usize;
            for (seq, r) in self.cache.iter().skip(skip) {
                if *seq > self.synced_seq || out.len() >= max || full(bytes, r.len(), out.len()) {
                    break;
                }
                bytes += r.len();
                out.push((*seq, r.clone()));
            }
            return Ok(out);
        }
        // Older ones from disk, reading on from where the last read stopped.
        let start = match &self.cursor {
            Some(c)
                if c.next_seq == after + 1 && self.segments.iter().any(|s| s.path == c.path) =>
            {
                Some((c.path.clone(), c.offset))
            }
            _ => None,
        };
        let mut segs: Vec<(PathBuf, u64)> = Vec::new();
        match start {
            Some((path, off)) => {
                let mut on = false;
                for s in &self.segments {
                    if s.path == path {
                        on = true;
                        segs.push((s.path.clone(), off));
                    } else if on {
                        segs.push((s.path.clone(), 0));
                    }
                }
            }
            None => {
                for s in &self.segments {
                    if s.last_seq > after {
                        segs.push((s.path.clone(), 0));
                    }
                }
            }
        }
        // Records up to `synced_seq` are in the files: nothing to flush (which could fail).
        for (path, mut offset) in segs {
            let mut f = std::io::BufReader::new(File::open(&path)?);
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset))?;
            let mut head = [0u8; 8];
            loop {
                if f.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
                if len > MAX_RECORD {
                    break;
                }
                let mut payload = vec![0u8; len];
                if f.read_exact(&mut payload).is_err() {
                    break;
                }
                offset += 8 + len as u64;
                if crc32fast::hash(&payload) != crc {
                    continue;
                }
                let Some((seq, _)) = seq_hash(&payload) else {
                    continue;
                };
                if seq > self.synced_seq {
                    return Ok(out);
                }
                if seq > after {
                    if full(bytes, payload.len(), out.len()) {
                        return Ok(out);
                    }
                    bytes += payload.len();
                    out.push((seq, payload));
                    self.cursor = Some(ReadCursor {
                        path: path.clone(),
                        offset,
                        next_seq: seq + 1,
                    });
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Tests: a disk with `space` bytes left; `refused` counts the writes it failed.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct TestDisk {
    pub space: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
}

/// Tests: a write to a [`TestDisk`], failing part-way like a full disk.
#[cfg(test)]
fn limited_write(f: &mut File, buf: &[u8], disk: &TestDisk) -> std::io::Result<usize> {
    use std::sync::atomic::Ordering;
    let left = disk.space.load(Ordering::SeqCst) as usize;
    if left == 0 {
        disk.refused.fetch_add(1, Ordering::SeqCst);
        return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
    }
    let n = f.write(&buf[..buf.len().min(left)])?;
    disk.space.fetch_sub(n as u64, Ordering::SeqCst);
    Ok(n)
}

/// Where the last read from disk stopped.
#[derive(Debug, Clone)]
struct ReadCursor {
    path: PathBuf,
    offset: u64,
    next_seq: u64,
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;
