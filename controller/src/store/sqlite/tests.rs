//! Tests of the SQLite store.

use super::*;

fn token(id: &str, max_uses: u32, expires_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-{id}"),
        tenant: "acme".into(),
        created_at: 0,
        expires_at,
        max_uses,
        uses: 0,
        labels: Labels::new(),
        revoked: false,
        created_by: "test".into(),
        comment: String::new(),
    }
}

fn agent_for(t: &TokenRecord, id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: id.into(),
        tenant: t.tenant.clone(),
        token_id: t.id.clone(),
        ..AgentRecord::default()
    }
}

#[test]
fn a_one_time_token_enrolls_once_and_a_failed_registration_spends_nothing() {
    let s = SqliteStore::in_memory().unwrap();
    s.insert_token(&token("t1", 1, 100)).unwrap();
    let failed = s.enroll("hash-t1", None, 10, &mut |_| {
        Err(StoreError::Aborted("signing failed".into()))
    });
    assert!(matches!(failed, Err(StoreError::Aborted(_))));
    assert_eq!(s.token("t1").unwrap().unwrap().uses, 0);
    let ok = s
        .enroll("hash-t1", Some(&TenantId::trusted("acme")), 10, &mut |t| {
            Ok(agent_for(t, "a1"))
        })
        .unwrap();
    assert_eq!(ok.unwrap().agent_id, "a1");
    let again = s
        .enroll("hash-t1", None, 10, &mut |t| Ok(agent_for(t, "a2")))
        .unwrap();
    assert!(matches!(again, Err(RedeemError::Exhausted { .. })));
    assert!(s.agent(&AgentId::trusted("a2")).unwrap().is_none());
    s.insert_token(&token("t2", 5, 100)).unwrap();
    let wrong = s
        .enroll("hash-t2", Some(&TenantId::trusted("other")), 10, &mut |t| {
            Ok(agent_for(t, "a3"))
        })
        .unwrap();
    assert!(matches!(wrong, Err(RedeemError::WrongTenant { .. })));
    let late = s
        .enroll("hash-t2", None, 100, &mut |t| Ok(agent_for(t, "a3")))
        .unwrap();
    assert!(matches!(late, Err(RedeemError::Expired { .. })));
    assert_eq!(
        s.enroll("nope", None, 1, &mut |t| Ok(agent_for(t, "a4")))
            .unwrap(),
        Err(RedeemError::Unknown)
    );
}

#[test]
fn versions_must_follow_each_other() {
    let s = SqliteStore::in_memory().unwrap();
    let mut p = PolicyRecord {
        tenant: "acme".into(),
        version: 2,
        document: "servers: []".into(),
        sha256: String::new(),
        bundle: vec![1],
        issued_at: 0,
        expires_at: 1,
        key_id: "k".into(),
        pushed_by: "me".into(),
        comment: String::new(),
        rollback_of: None,
        created_at: 0,
    };
    assert!(matches!(s.insert_policy(&p), Err(StoreError::Conflict(_))));
    p.version = 1;
    s.insert_policy(&p).unwrap();
    assert!(matches!(s.insert_policy(&p), Err(StoreError::Conflict(_))));
    p.version = 2;
    s.insert_policy(&p).unwrap();
    assert_eq!(
        s.latest_policy(&TenantId::trusted("acme"))
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        s.policy_history(&TenantId::trusted("acme"), 1)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.policy_tenants().unwrap(), vec!["acme".to_owned()]);
}

#[test]
fn a_database_from_a_newer_controller_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).err().unwrap().to_string();
    assert!(err.contains("newer"), "{err}");
    // A reopen of a current one keeps the data and the schema version.
    let path2 = dir.path().join("db2");
    let s = SqliteStore::open(&path2).unwrap();
    s.insert_token(&token("t", 1, 5)).unwrap();
    drop(s);
    let s = SqliteStore::open(&path2).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert!(s.token("t").unwrap().is_some());
}

fn event(agent: &str, id: &str, seq: u64, json: &str) -> StoredEventRecord {
    StoredEventRecord {
        event_id: id.into(),
        tenant: if agent == "agt-b" { "beta" } else { "acme" }.into(),
        agent_id: agent.into(),
        seq,
        event_type: "TOOL_CALL_PRE".into(),
        json: json.into(),
        ..StoredEventRecord::default()
    }
}

#[test]
fn an_old_database_upgrades_and_event_ids_are_scoped_to_their_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // A database as the controller before migration 3 left it: event 5 was deleted, so the
    // AUTOINCREMENT mark (5) is above MAX(id) (4).
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        for i in 1..=5 {
            conn.execute(
                "INSERT INTO events (event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json)
                 VALUES (?1, 'beta', 'agt-b', ?2, 'TOOL_CALL_PRE', '', '', '', 1, ?3)",
                params![format!("e{i}"), i, format!("{{\"n\":{i}}}")],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM events WHERE id = 5", []).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(s.max_event_id().unwrap(), 4, "the events were kept");
    // Agent A (another tenant) uses ids agent B already used: stored, not ignored.
    let a = [
        event("agt-a", "e1", 1, "{\"a\":1}"),
        event("agt-a", "e2", 2, "{\"a\":2}"),
    ];
    assert_eq!(
        s.commit_events(&AgentId::trusted("agt-a"), &a, None)
            .unwrap(),
        2
    );
    let ids: Vec<u64> = s
        .query_events(&EventFilter {
            agent_id: Some("agt-a".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        ids,
        vec![6, 7],
        "an id once given out (5) is never given again"
    );
    // The identical record is a re-send (skipped); a different one under a seen id is stored.
    assert_eq!(
        s.commit_events(&AgentId::trusted("agt-a"), &a[..1], None)
            .unwrap(),
        0
    );
    let other = event("agt-a", "e1", 9, "{\"a\":\"other\"}");
    assert_eq!(
        s.commit_events(&AgentId::trusted("agt-a"), &[other], None)
            .unwrap(),
        1
    );
}

/// The contract sinks rely on: event ids become visible in increasing order, so a reader that
/// sees the high-water mark M sees every event at or below M. Two writers (two connections, as
/// two processes would be) commit batches side by side while a reader checks it.
#[test]
fn event_ids_become_visible_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let reader = SqliteStore::open(&path).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let s = SqliteStore::open(&path).unwrap();
                for b in 0..40 {
                    let batch: Vec<_> = (0..25)
                        .map(|i| event("agt-a", &format!("w{w}-{b}-{i}"), i, "{}"))
                        .collect();
                    s.commit_events(&AgentId::trusted("agt-a"), &batch, None)
                        .unwrap();
                }
            })
        })
        .collect();
    let mut checks = 0;
    while writers.iter().any(|w| !w.is_finished()) || checks == 0 {
        let high = reader.max_event_id().unwrap();
        if high == 0 {
            continue; // (upto_id 0 means no bound)
        }
        let seen = reader
            .query_events(&EventFilter {
                upto_id: high,
                limit: 10_000,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            seen.len() as u64,
            high,
            "an id at or below {high} was not visible"
        );
        assert!(seen.iter().enumerate().all(|(i, e)| e.id == i as u64 + 1));
        checks += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(reader.max_event_id().unwrap(), 2 * 40 * 25);
}

/// Migration 5: events stored before digests existed get theirs, so an identical re-send of one
/// is still recognised (by digest, through the index), and what ingest sees of an id is a count
/// and the digests asked for, never the stored bodies.
#[test]
fn events_stored_before_digests_are_backfilled_and_looked_up_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let conn = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..4] {
            conn.execute_batch(m).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        for i in 1..=3 {
            conn.execute(
                "INSERT INTO events (event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json)
                 VALUES ('x', 'acme', 'agt-a', ?1, 'TOOL_CALL_PRE', '', '', '', 1, ?2)",
                params![i, format!("{{\"n\":{i}}}")],
            )
            .unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    // Every row has its digest, and the digest index (built after the backfill) replaced the
    // old one.
    {
        let conn = Connection::open(&path).unwrap();
        let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(q("SELECT count(*) FROM events WHERE digest IS NULL"), 0);
        assert_eq!(
            q(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'events_agent_event_digest'"
            ),
            1
        );
        assert_eq!(
            q("SELECT count(*) FROM sqlite_master WHERE name = 'events_agent_event'"),
            0
        );
    }
    let old = event("agt-a", "x", 2, "{\"n\":2}");
    assert_eq!(
        s.commit_events(&AgentId::trusted("agt-a"), &[old], None)
            .unwrap(),
        0
    );
    let keys = vec![
        ("x".to_owned(), record_digest("{\"n\":2}")),
        ("x".to_owned(), record_digest("{\"n\":9}")),
        ("y".to_owned(), record_digest("{\"n\":1}")),
    ];
    let mut viewed = None;
    s.commit_checked(
        &TenantId::trusted("acme"),
        &AgentId::trusted("agt-a"),
        &keys,
        &mut |v| {
            viewed = Some(v.clone());
            (Vec::new(), None)
        },
    )
    .unwrap();
    let seen = viewed.unwrap().seen;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen["x"].records, 3);
    assert_eq!(
        seen["x"].digests,
        [record_digest("{\"n\":2}")].into_iter().collect()
    );
}

#[test]
fn reads_of_a_file_store_do_not_queue_behind_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    s.insert_token(&token("t1", 1, i64::MAX)).unwrap();
    // The writer is held (as by a long write transaction): a read still answers, and sees what
    // was committed.
    let writer = s.conn();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::sync::Arc::clone(&s);
    std::thread::spawn(move || {
        let _ = tx.send(reader.token("t1").map(|t| t.is_some()));
    });
    let seen = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(writer);
    assert!(matches!(seen, Ok(Ok(true))), "{seen:?}");
}

fn enrolled(s: &SqliteStore, tenant: &str, id: &str) {
    let mut t = token(&format!("tok-{id}"), 1, 100);
    t.tenant = tenant.into();
    s.insert_token(&t).unwrap();
    s.enroll(&t.hash, None, 10, &mut |t| Ok(agent_for(t, id)))
        .unwrap()
        .unwrap();
}

fn mcp_report(uptime: u64, mcp: &str) -> AgentReportRecord {
    AgentReportRecord {
        inventory: Some(format!("{{\"hostname\":\"h\",\"uptimeSecs\":{uptime}}}")),
        mcp: Some((mcp.to_owned(), format!("sha-of-{mcp}"))),
        ..AgentReportRecord::default()
    }
}

#[test]
fn a_heartbeat_rewrites_the_mcp_inventory_only_when_it_changed() {
    let s = SqliteStore::in_memory().unwrap();
    enrolled(&s, "acme", "agt-a");
    let id = AgentId::trusted("agt-a");
    let big = format!(
        "{{\"mcpServers\":[],\"pad\":\"{}\"}}",
        "x".repeat(400 << 10)
    );
    assert!(s.record_report(&id, &mcp_report(1, &big), 1).unwrap());
    let changes = || -> i64 {
        s.conn()
            .query_row("SELECT total_changes()", [], |r| r.get(0))
            .unwrap()
    };
    let before = changes();
    // The same MCP inventory (other machine facts changed): only the agent's row is written.
    assert!(!s.record_report(&id, &mcp_report(2, &big), 2).unwrap());
    assert_eq!(changes() - before, 1, "the agents row only");
    let a = s.agent(&id).unwrap().unwrap();
    assert_eq!(a.mcp.as_deref(), Some(big.as_str()));
    assert!(a.inventory.unwrap().contains("\"uptimeSecs\":2"));
    assert_eq!(a.last_seen, Some(2));
    // A changed one is stored; a report without an inventory keeps it.
    assert!(s.record_report(&id, &mcp_report(3, "{}"), 3).unwrap());
    assert!(
        !s.record_report(&id, &AgentReportRecord::default(), 4)
            .unwrap()
    );
    assert_eq!(s.agent(&id).unwrap().unwrap().mcp.as_deref(), Some("{}"));
    // An unknown agent stores nothing.
    let ghost = AgentId::trusted("agt-ghost");
    assert!(!s.record_report(&ghost, &mcp_report(1, "{}"), 1).unwrap());
    let n: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM agent_mcp", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn agents_page_by_tenant_and_id_with_or_without_their_mcp_inventory() {
    let s = SqliteStore::in_memory().unwrap();
    for (tenant, id) in [
        ("b", "agt-3"),
        ("a", "agt-2"),
        ("a", "agt-1"),
        ("c", "agt-0"),
    ] {
        enrolled(&s, tenant, id);
        s.record_report(&AgentId::trusted(id), &mcp_report(1, "{\"m\":1}"), 1)
            .unwrap();
    }
    let keys = |v: Vec<AgentRecord>| -> Vec<(String, String, bool)> {
        v.into_iter()
            .map(|a| (a.tenant, a.agent_id, a.mcp.is_some()))
            .collect()
    };
    let k = |t: &str, a: &str, m: bool| (t.to_owned(), a.to_owned(), m);
    assert_eq!(
        keys(s.list_agents_page(None, None, 2, true).unwrap()),
        [k("a", "agt-1", true), k("a", "agt-2", true)]
    );
    assert_eq!(
        keys(
            s.list_agents_page(None, Some(("a", "agt-2")), 10, false)
                .unwrap()
        ),
        [k("b", "agt-3", false), k("c", "agt-0", false)]
    );
    let a = TenantId::trusted("a");
    assert_eq!(
        keys(
            s.list_agents_page(Some(&a), Some(("a", "agt-1")), 10, true)
                .unwrap()
        ),
        [k("a", "agt-2", true)]
    );
    // A cursor in another tenant moves nothing out of the tenant asked.
    assert!(
        s.list_agents_page(Some(&a), Some(("0", "x")), 10, true)
            .unwrap()
            .iter()
            .all(|r| r.tenant == "a")
    );
}

#[test]
fn stored_mcp_inventories_move_out_of_the_agents_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let conn = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..5] {
            conn.execute_batch(m).unwrap();
        }
        conn.execute_batch(DIGEST_INDEX).unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        for (id, inv) in [
            (
                "agt-a",
                Some(
                    r#"{"hostname":"h","osName":"Debian","mcpServers":[{"name":"files","client":"cursor"}],"mcpFiles":[{"path":"/p"}]}"#,
                ),
            ),
            ("agt-b", Some(r#"{"hostname":"h2"}"#)),
            ("agt-c", Some("not json")),
            ("agt-d", None),
        ] {
            conn.execute(
                "INSERT INTO agents (agent_id, tenant, hostname, labels, enrolled_at, applied_version, stale, last_error, cert_not_after, inventory, agent_version, token_id)
                 VALUES (?1, 'acme', 'h', '{}', 1, 0, 0, '', 0, ?2, '', 't')",
                params![id, inv],
            )
            .unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let a = s.agent(&AgentId::trusted("agt-a")).unwrap().unwrap();
    let inv: serde_json::Value = serde_json::from_str(&a.inventory.unwrap()).unwrap();
    assert_eq!(
        inv,
        serde_json::json!({"hostname": "h", "osName": "Debian"})
    );
    let mcp: serde_json::Value = serde_json::from_str(&a.mcp.unwrap()).unwrap();
    assert_eq!(
        mcp,
        serde_json::json!({"mcpServers": [{"name": "files", "client": "cursor"}],
            "mcpFiles": [{"path": "/p"}]})
    );
    let b = s.agent(&AgentId::trusted("agt-b")).unwrap().unwrap();
    assert_eq!(b.inventory.as_deref(), Some(r#"{"hostname":"h2"}"#));
    assert_eq!(b.mcp, None);
    let c = s.agent(&AgentId::trusted("agt-c")).unwrap().unwrap();
    assert_eq!(c.inventory.as_deref(), Some("not json"));
    assert_eq!(
        s.agent(&AgentId::trusted("agt-d"))
            .unwrap()
            .unwrap()
            .inventory,
        None
    );
    // The next report with the same MCP inventory stores its digest once, then no more.
    let id = AgentId::trusted("agt-a");
    assert!(s.record_report(&id, &mcp_report(1, "{}"), 1).unwrap());
    assert!(!s.record_report(&id, &mcp_report(1, "{}"), 2).unwrap());
}
