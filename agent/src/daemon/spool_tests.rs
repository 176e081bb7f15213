use super::*;

fn ev(i: u64) -> Event<'static> {
    let id = thoth_proto::Identity {
        tenant_id: String::new(),
        agent_id: String::new(),
        hostname: "h".into(),
        user: String::new(),
    };
    Event::new(
        thoth_proto::EventType::ToolCallPre,
        format!("e{i}"),
        "t".into(),
        &id,
    )
    .into_owned()
}

#[test]
fn appends_survive_reopen_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..100 {
        s.append(&mut ev(i)).unwrap();
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
fn a_detail_naming_hostname_keeps_its_segment_and_the_chain_across_a_restart() {
    // A local user's proxy event may carry `detail: {"a":0,"hostname":…}`; it must be sealed with
    // a top-level hash (it used to take the hash inside `detail`), and reopening must keep the
    // segment whose first and last records it is (it used to delete every user's records in it).
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..5 {
        let mut e = ev(i);
        if i == 0 || i == 4 {
            e.detail = Some(serde_json::json!({"a": 0, "hostname": "x"}));
        }
        s.append(&mut e).unwrap();
    }
    s.sync().unwrap();
    let head = s.head();
    drop(s);
    let (mut s, rec) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(rec.corrupt.is_empty(), "{:?}", rec.corrupt);
    assert_eq!((rec.records, s.seq(), s.head()), (5, 5, head));
    let all = s.read_after(0, 100).unwrap();
    assert_eq!(all.len(), 5);
    let mut prev = thoth_proto::chain::GENESIS.to_owned();
    for (_, line) in &all {
        prev = thoth_proto::chain::check_link(line, &prev).unwrap().1;
    }
}

#[test]
fn a_torn_tail_is_cut_and_a_flipped_byte_is_detected_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..10 {
        s.append(&mut ev(i)).unwrap();
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
        s.append(&mut ev(i)).unwrap();
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
        s.append(&mut ev(i)).unwrap();
    }
    // The disk takes 3,000 bytes, then refuses: not durable, and retries fail too.
    assert!(s.sync().is_err());
    assert!(s.sync().is_err());
    assert_eq!(s.synced(), 0);
    // More events while it is full are held (bounded), not lost.
    for i in 50..60 {
        s.append(&mut ev(i)).unwrap();
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
        e.detail = Some(Value::from("x".repeat(10_000)));
        s.append(&mut e).unwrap();
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
        s.append(&mut ev(i)).unwrap();
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
        s.append(&mut ev(i)).unwrap();
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

/// The spool's files are private (moved from the state dir's permission test).
#[cfg(unix)]
#[test]
fn spool_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (mut spool, _) = Spool::open(&root.join("spool2"), 1 << 20).unwrap();
    spool.append(&mut ev(0)).unwrap();
    spool.sync().unwrap();
    for e in std::fs::read_dir(root.join("spool2")).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(m & 0o077, 0, "{}: {:o}", p.display(), m);
    }
}
