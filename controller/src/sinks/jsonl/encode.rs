use crate::store::StoredEventRecord;

/// Events as stored, one JSON object a line.
pub(super) fn lines(events: &[StoredEventRecord]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(events.iter().map(|e| e.json.len() + 1).sum());
    for e in events {
        buf.extend_from_slice(e.json.as_bytes());
        buf.push(b'\n');
    }
    buf
}
