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
use thoth_proto::Chain;

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

fn seq_hash(payload: &[u8]) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    Some((v.get("seq")?.as_u64()?, v.get("hash")?.as_str()?.to_owned()))
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
        let mut chain_head: Option<String> = None;
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
            let first = records.first().and_then(|r| seq_hash(r)).map(|s| s.0);
            let last = records.last().and_then(|r| seq_hash(r));
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
                    Some((seq, hash)) if seq.parse::<u64>().is_ok() => {
                        Chain::resume(seq.parse().expect("checked"), hash.to_owned())
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
        self.chain.head().to_owned()
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

    /// Chains and appends one event (a JSON object); not yet durable until [`Spool::sync`]. An
    /// error means the event was not taken (nothing of it is on the chain).
    pub fn append(&mut self, mut event: serde_json::Map<String, Value>) -> std::io::Result<u64> {
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
        let line = self.chain.seal_value(&mut event);
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
        crate::daemon::state::write_atomic(
            &self.dir.join("acked"),
            format!("{}\n", self.acked).as_bytes(),
            0o600,
        )?;
        crate::daemon::state::write_atomic(
            &self.dir.join("head"),
            format!("{} {}\n", self.chain.seq(), self.chain.head()).as_bytes(),
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
        let file = crate::daemon::state::write_atomic(&file, &payload, 0o600)
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
mod tests {
    use super::*;

    fn ev(i: u64) -> serde_json::Map<String, Value> {
        let Value::Object(m) = serde_json::json!({"eventId": format!("e{i}"), "eventType": "TOOL_CALL_PRE", "hostname": "h", "timestamp": "t"})
        else {
            unreachable!()
        };
        m
    }

    #[test]
    fn appends_survive_reopen_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..100 {
            s.append(ev(i)).unwrap();
        }
        s.sync().unwrap();
        let head = s.head();
        drop(s);
        let (mut s, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records, 100);
        assert_eq!((s.seq(), s.head()), (100, head));
        let all = s.read_after(0, 1000).unwrap();
        assert_eq!(all.len(), 100);
        // The stored lines form one verifiable chain.
        let mut prev = thoth_proto::chain::GENESIS.to_owned();
        for (seq, line) in &all {
            let (s2, h) = thoth_proto::chain::check_link(line, &prev).unwrap();
            assert_eq!(s2, *seq);
            prev = h;
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_flipped_byte_is_detected_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            s.append(ev(i)).unwrap();
        }
        s.sync().unwrap();
        drop(s);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".log"))
            .unwrap();
        let mut data = std::fs::read(&seg).unwrap();
        // Flip a byte inside the 3rd record's payload, and add a torn partial record.
        let mut at = 0;
        for _ in 0..2 {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            at += 8 + len;
        }
        data[at + 20] ^= 0x20;
        data.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&seg, &data).unwrap();
        let (mut s, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.records, 9);
        assert_eq!(rec.corrupt.len(), 1, "{:?}", rec.corrupt);
        assert!(rec.corrupt[0].contains("checksum"));
        assert_eq!(rec.truncated_bytes, 6);
        assert_eq!(s.read_after(0, 100).unwrap().len(), 9);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts_them_and_acks_delete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 64 << 10).unwrap();
        for i in 0..2000 {
            s.append(ev(i)).unwrap();
        }
        s.sync().unwrap();
        assert!(s.bytes() <= (64 << 10) + (64 << 10));
        assert!(s.lost_total > 0, "nothing was dropped");
        let left = s.read_after(0, 10_000).unwrap();
        assert_eq!(left.len() as u64 + s.lost_total, 2000);
        let last = s.seq();
        s.ack(last).unwrap();
        assert!(s.read_after(s.acked(), 10).unwrap().is_empty());
        drop(s);
        let (s, _) = Spool::open(dir.path(), 64 << 10).unwrap();
        assert_eq!(s.acked(), 2000);
        assert_eq!(
            s.seq(),
            2000,
            "the chain continues after the acknowledged head"
        );
    }

    /// Finding 13.12: a write that fails part-way (disk full) used to be retried by rewriting
    /// the whole buffer after the part already written, corrupting the segment.
    #[test]
    fn a_full_disk_never_rewrites_or_corrupts_a_segment() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        let disk = std::sync::Arc::new(TestDisk::default());
        disk.space.store(3_000, Ordering::SeqCst);
        s.space = Some(disk.clone());
        for i in 0..50 {
            s.append(ev(i)).unwrap();
        }
        // The disk takes 3,000 bytes, then refuses: not durable, and retries fail too.
        assert!(s.sync().is_err());
        assert!(s.sync().is_err());
        assert_eq!(s.synced(), 0);
        // More events while it is full are held (bounded), not lost.
        for i in 50..60 {
            s.append(ev(i)).unwrap();
        }
        assert!(s.sync().is_err());
        disk.space.store(u64::MAX / 2, Ordering::SeqCst);
        s.sync().unwrap();
        assert_eq!(s.synced(), 60);
        drop(s);
        let (mut s, rec) = Spool::open(dir.path(), 1 << 30).unwrap();
        assert!(rec.corrupt.is_empty(), "{:?}", rec.corrupt);
        assert_eq!((rec.records, rec.truncated_bytes), (60, 0));
        let all = s.read_after(0, 1000).unwrap();
        let mut prev = thoth_proto::chain::GENESIS.to_owned();
        for (i, (seq, line)) in all.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            prev = thoth_proto::chain::check_link(line, &prev).unwrap().1;
        }
    }

    #[test]
    fn reads_are_capped_by_bytes_as_well_as_count() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..100 {
            let mut e = ev(i);
            e.insert("pad".into(), Value::from("x".repeat(10_000)));
            s.append(e).unwrap();
        }
        s.sync().unwrap();
        for cached in [true, false] {
            if !cached {
                s.cache.clear();
                s.cache_bytes = 0;
            }
            let got = s.read_after_bytes(0, 500, 100_000).unwrap();
            let bytes: usize = got.iter().map(|(_, r)| r.len()).sum();
            assert!(
                bytes <= 100_000 && got.len() >= 9,
                "{} events, {bytes} bytes",
                got.len()
            );
            // A single record larger than the cap still goes (alone).
            assert_eq!(s.read_after_bytes(0, 500, 10).unwrap().len(), 1);
        }
    }

    #[test]
    fn reading_past_the_memory_cache_goes_on_from_disk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 30).unwrap();
        for i in 0..2000 {
            s.append(ev(i)).unwrap();
        }
        s.sync().unwrap();
        // Empty the memory cache so every read comes from the segment files.
        s.cache.clear();
        s.cache_bytes = 0;
        let mut after = 0;
        let mut got = 0;
        loop {
            let batch = s.read_after(after, 137).unwrap();
            if batch.is_empty() {
                break;
            }
            for (seq, _) in &batch {
                assert_eq!(*seq, after + 1, "out of order");
                after = *seq;
            }
            got += batch.len();
        }
        assert_eq!(got, 2000);
        // A read from an arbitrary point (a reconnect after an ack) starts at the right event.
        let again = s.read_after(1500, 10).unwrap();
        assert_eq!(again[0].0, 1501);
    }

    /// Review L12: past 64 quarantined records no copy was written, yet EVENT_QUARANTINED
    /// named a file; nothing ever cleaned the directory. Now the oldest copies rotate out, the
    /// file named is always there (or none is named), and the directory stays bounded.
    #[test]
    fn quarantined_copies_rotate_and_the_file_named_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..100 {
            s.append(ev(i)).unwrap();
        }
        s.sync().unwrap();
        let mut rotated = 0;
        for seq in 1..=100 {
            let q = s.quarantine(seq).unwrap().unwrap();
            let f = q.file.expect("a copy is kept");
            assert!(
                f.exists(),
                "quarantine {seq} names {} which is not there",
                f.display()
            );
            rotated += q.rotated_out;
        }
        let kept = std::fs::read_dir(dir.path().join("quarantine"))
            .unwrap()
            .count();
        assert_eq!(kept, QUARANTINE_KEPT);
        assert_eq!(rotated, 100 - QUARANTINE_KEPT);
    }
}
