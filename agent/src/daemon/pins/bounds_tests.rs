//! Review fixes: one server cannot crowd the user's other servers out of the store, tool names
//! with control characters never enter it, and pending definitions keep their description
//! (cut, escaped when reported) only while they wait.

use serde_json::json;
use thoth_proto::fleet as pb;
use thoth_proto::pins::tool_digest;

use super::PinBook;
use super::check::validate;
use super::store::{self, MAX_DESCRIPTION, MAX_SERVER_BYTES};
use super::tests::{key_of, list, state};

const ANN: u32 = 1001;

fn tool(name: &str, description: &str) -> pb::ToolDefinition {
    let d = tool_digest(&json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object"},
    }))
    .unwrap();
    pb::ToolDefinition {
        name: d.name,
        digest: d.digest,
        description_sha256: d.description,
        schema_sha256: d.schema,
        annotations_sha256: d.annotations,
        description: description.into(),
    }
}

fn stored(dir: &std::path::Path) -> store::UserStore {
    store::load(&dir.join(format!("{ANN}.json")))
        .unwrap()
        .unwrap()
}

#[test]
fn a_huge_changing_server_neither_evicts_the_users_other_servers_nor_grows_past_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let book = PinBook::new(pins.clone());
    // Two servers seen first (the least recently seen): one with an admin-accepted pin.
    let good = list("fs", vec![tool("read", "Read.")]);
    book.check(ANN, &good);
    book.decide(&pb::PinDecision {
        server_key: key_of(&good),
        tool: "read".into(),
        digest: good.tools[0].digest.clone(),
        accepted: true,
        decided_unix_ms: 1,
        ..pb::PinDecision::default()
    })
    .unwrap();
    book.check(ANN, &list("git", vec![tool("log", "Log.")]));
    // A server with 4096 tools of 256-byte names, then all of them changed with 2 KiB
    // descriptions.
    let name = |i: usize| format!("{i:0>256}");
    let evil = |d: &str| {
        let tools = (0..4096).map(|i| tool(&name(i), d)).collect();
        list("evil", tools)
    };
    let (v, _) = book.check(ANN, &evil("x"));
    let pinned = v.tools.iter().filter(|t| t.state == "new").count();
    assert!(pinned > 0 && pinned < 4096, "{pinned} pinned");
    // Past the cap: answered "added" (not pinned), reported every time as not remembered.
    let last = state(&v, &name(4095));
    assert_eq!((last.state.as_str(), last.first_report), ("added", true));
    let (v, _) = book.check(ANN, &evil("x"));
    assert_eq!(state(&v, &name(0)).state, "same");
    assert!(state(&v, &name(4095)).first_report);
    let (v, _) = book.check(ANN, &evil(&"y".repeat(MAX_DESCRIPTION)));
    assert_eq!(state(&v, &name(0)).state, "changed");
    book.flush();
    let s = stored(&pins);
    let e = &s.servers[&key_of(&evil("x"))];
    assert!(e.bytes() <= MAX_SERVER_BYTES, "{} bytes", e.bytes());
    assert_eq!(s.evicted, 0, "nothing evicted");
    for (server, tool) in [("fs", "read"), ("git", "log")] {
        assert!(
            s.servers
                .values()
                .any(|e| e.name == server && e.tools.contains_key(tool)),
            "{server} kept"
        );
    }
    let (v, _) = book.check(ANN, &good);
    let r = state(&v, "read");
    assert_eq!((r.state.as_str(), r.accepted), ("same", true));
}

#[test]
fn over_the_file_bound_only_servers_without_an_accepted_pin_are_evicted() {
    let mut big = store::UserStore::default();
    for i in 0..40i64 {
        let mut e = store::ServerEntry {
            name: format!("s{i}"),
            last_seen_ms: i,
            ..Default::default()
        };
        for j in 0..1000 {
            e.tools.insert(
                format!("{}{j}", "t".repeat(100)),
                store::ToolPin {
                    digest: "a".repeat(64),
                    parts: Default::default(),
                    source: store::Source::FirstUse,
                    accepted: i < 2 && j == 0,
                    first_seen_ms: 0,
                    pending: None,
                },
            );
        }
        big.servers.insert(format!("{i:064}"), e);
    }
    let keep = format!("{:064}", 39);
    let (bytes, evicted) = big.encode(&keep);
    assert!(!bytes.is_empty() && bytes.len() <= store::MAX_FILE_BYTES);
    assert!(evicted > 0);
    for i in [0, 1, 39] {
        assert!(
            big.servers.contains_key(&format!("{i:064}")),
            "server {i} kept (the two oldest hold an accepted pin, the last is in use)"
        );
    }
    assert!(
        !big.servers.contains_key(&format!("{:064}", 2)),
        "the oldest first-use-only server went first"
    );
}

#[test]
fn tool_names_with_control_characters_are_refused() {
    for bad in ["a\u{1b}[31mb", "line\nbreak", "nul\0", "c1\u{85}"] {
        let l = list("fs", vec![tool(bad, "x")]);
        let why = validate(&l).unwrap_err();
        assert!(why.contains("control character"), "{bad:?}: {why}");
    }
    assert!(validate(&list("fs", vec![tool("ok_tool-1", "x")])).is_ok());
}

#[test]
fn pending_definitions_keep_their_description_cut_and_report_it_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let book = PinBook::new(pins.clone());
    book.check(ANN, &list("fs", vec![tool("read", "Read.")]));
    // Pinned definitions keep no description.
    book.flush();
    let s = stored(&pins);
    let e = s.servers.values().next().unwrap();
    assert!(e.tools["read"].pending.is_none());
    assert!(
        !String::from_utf8(std::fs::read(pins.join(format!("{ANN}.json"))).unwrap())
            .unwrap()
            .contains("Read.")
    );
    // A change: its description kept (cut to 2 KiB, not refused), reported escaped.
    let long = format!("Read.\n<IMPORTANT>{}</IMPORTANT>", "é".repeat(2000));
    let changed = list("fs", vec![tool("read", &long), tool("exec", "Run\tit.")]);
    let (v, _) = book.check(ANN, &changed);
    assert_eq!(state(&v, "read").state, "changed");
    assert_eq!(state(&v, "exec").state, "added");
    book.flush();
    let s = stored(&pins);
    let e = s.servers.values().next().unwrap();
    let kept = &e.tools["read"].pending.as_ref().unwrap().description;
    // Cut as written in the file ("\n" takes 2 bytes), marked as cut.
    let written = serde_json::to_string(kept).unwrap().len() - 2;
    assert!(written <= MAX_DESCRIPTION && written > MAX_DESCRIPTION - 4);
    let head = kept.strip_suffix(store::CUT_MARKER).unwrap();
    assert!(long.starts_with(head));
    assert_eq!(e.added["exec"].description, "Run\tit.");
    let (reports, _) = book.reports(&|u| format!("u{u}"));
    let r = reports.iter().find(|r| r.tool == "read").unwrap();
    assert!(
        r.pending_description.starts_with("Read.\\n<IMPORTANT>"),
        "{}",
        r.pending_description
    );
    assert!(r.pending_description.len() <= 2048);
    assert!(!r.pending_description.chars().any(char::is_control));
    // Accepted: the description goes with the pending definition.
    book.decide(&pb::PinDecision {
        server_key: key_of(&changed),
        tool: "read".into(),
        digest: changed.tools[0].digest.clone(),
        accepted: true,
        decided_unix_ms: 1,
        ..pb::PinDecision::default()
    })
    .unwrap();
    book.flush();
    let (reports, _) = book.reports(&|u| format!("u{u}"));
    let r = reports.iter().find(|r| r.tool == "read").unwrap();
    assert!(r.pending_description.is_empty() && r.state == "pinned");
    assert!(
        !String::from_utf8(std::fs::read(pins.join(format!("{ANN}.json"))).unwrap())
            .unwrap()
            .contains("IMPORTANT")
    );
}

#[test]
fn a_users_slow_write_holds_up_neither_another_users_check_nor_their_own_reads() {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;
    const BOB: u32 = 1002;
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let book = Arc::new(PinBook::new(pins.clone()));
    let fs = list("fs", vec![tool("read", "Read.")]);
    book.check(ANN, &fs);
    let git = list("git", vec![tool("log", "Log.")]);
    let (tx, rx) = mpsc::channel();
    book.with_write_held(ANN, || {
        // While ann's file is being written: bob's first list (pinned, his file written) and
        // ann's unchanged list (nothing to write) are both answered.
        for (uid, l) in [(BOB, git.clone()), (ANN, fs.clone())] {
            let (b, tx) = (Arc::clone(&book), tx.clone());
            std::thread::spawn(move || {
                let (v, _) = b.check(uid, &l);
                tx.send((uid, v)).unwrap();
            });
        }
        for _ in 0..2 {
            let (uid, v) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a check waited for another write");
            let want = if uid == BOB { "new" } else { "same" };
            assert!(v.tools.iter().all(|t| t.state == want), "{uid}: {v:?}");
        }
    });
    assert!(pins.join(format!("{BOB}.json")).exists());
}

#[test]
fn descriptions_count_as_written_control_characters_cannot_bloat_a_server_past_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let pins = dir.path().join("pins");
    let book = PinBook::new(pins.clone());
    let name = |i: usize| format!("{i:0>256}");
    let evil = |d: &str| {
        let tools = (0..300).map(|i| tool(&name(i), d)).collect();
        list("evil", tools)
    };
    book.check(ANN, &evil("x"));
    // Each control character is written as 6 bytes ("\u0001").
    book.check(ANN, &evil(&"\u{1}".repeat(MAX_DESCRIPTION)));
    book.flush();
    let s = stored(&pins);
    let e = &s.servers[&key_of(&evil("x"))];
    let written: usize = e
        .tools
        .values()
        .filter_map(|t| t.pending.as_ref())
        .chain(e.added.values())
        .map(|p| serde_json::to_string(&p.description).unwrap().len() - 2)
        .sum();
    assert!(written > 0, "some descriptions kept");
    assert!(
        written <= MAX_SERVER_BYTES,
        "{written} description bytes written"
    );
    for p in e.tools.values().filter_map(|t| t.pending.as_ref()) {
        let n = serde_json::to_string(&p.description).unwrap().len() - 2;
        assert!(
            n <= MAX_DESCRIPTION,
            "{n} bytes written for one description"
        );
        if !p.description.is_empty() {
            assert!(p.description.ends_with(store::CUT_MARKER), "cut marked");
        }
    }
    // Not cut: no marker.
    let short = list("short", vec![tool("t", "a")]);
    book.check(ANN, &short);
    let (v, _) = book.check(ANN, &list("short", vec![tool("t", "b\u{1}")]));
    assert_eq!(state(&v, "t").state, "changed");
    book.flush();
    let s = stored(&pins);
    let p = s.servers[&key_of(&short)].tools["t"]
        .pending
        .clone()
        .unwrap();
    assert_eq!(p.description, "b\u{1}");
}
