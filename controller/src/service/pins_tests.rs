//! Tool pins driven directly (no gRPC): hostile reports, listing and grouping, decisions by id
//! or prefix, roles, tenant isolation, audit, the tenant's wake-up, and the event filters.

use std::sync::Arc;

use super::*;
use crate::service::agents::{AgentReport, AgentService, Inventory};
use crate::store::sqlite::SqliteStore;
use crate::store::{StoredEventRecord, TokenRecord};

pub(super) fn controller() -> (tempfile::TempDir, Arc<Controller>) {
    let dir = tempfile::tempdir().unwrap();
    crate::datadir::init(dir.path(), None).unwrap();
    let data = crate::DataDir::load(dir.path()).unwrap();
    let ctl = Controller::new(data, Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
    (dir, ctl)
}

pub(super) fn caller(name: &str, role: Role, scope: Option<&str>) -> Caller {
    Caller {
        name: name.into(),
        role,
        scope: scope.map(TenantId::trusted),
        fingerprint: format!("sha256:{name}"),
    }
}

/// Enrolls `id` into `tenant` (through the store, as enrollment does) and returns its record.
pub(super) fn enrolled(ctl: &Controller, tenant: &str, id: &str) -> AgentRecord {
    let t = TokenRecord {
        id: format!("tok-{id}"),
        hash: format!("hash-{id}"),
        tenant: tenant.into(),
        created_at: 0,
        expires_at: i64::MAX,
        max_uses: 1,
        uses: 0,
        labels: Default::default(),
        revoked: false,
        created_by: "test".into(),
        comment: String::new(),
    };
    ctl.store.insert_token(&t).unwrap();
    ctl.store
        .enroll(&t.hash, None, 10, &mut |t| {
            Ok(AgentRecord {
                agent_id: id.into(),
                tenant: t.tenant.clone(),
                hostname: format!("{id}.example"),
                token_id: t.id.clone(),
                ..AgentRecord::default()
            })
        })
        .unwrap()
        .unwrap()
}

pub(super) fn digest(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

pub(super) fn pin(user: &str, tool: &str, d: char) -> ToolPinRecord {
    ToolPinRecord {
        user: user.into(),
        client: "claude-desktop".into(),
        server_name: "files".into(),
        server_key: digest('5'),
        command: "npx files".into(),
        tool: tool.into(),
        digest: digest(d),
        state: "pinned".into(),
        source: "first_use".into(),
        ..ToolPinRecord::default()
    }
}

pub(super) fn changed(mut p: ToolPinRecord, to: char) -> ToolPinRecord {
    p.state = "changed".into();
    p.pending_digest = digest(to);
    p.changes = vec!["description".into()];
    p
}

pub(super) async fn report(
    ctl: &Controller,
    agent: &AgentRecord,
    pins: Vec<ToolPinRecord>,
) -> Result<u64, ServiceError> {
    AgentService(ctl)
        .report(
            agent,
            AgentReport {
                inventory: Some(Inventory {
                    hostname: agent.hostname.clone(),
                    tool_pins: pins,
                    ..Inventory::default()
                }),
                ..AgentReport::default()
            },
        )
        .await
}

#[tokio::test]
async fn reports_group_into_pinned_and_pending_rows_and_a_heartbeat_rewrites_only_changes() {
    let (_dir, ctl) = controller();
    let a1 = enrolled(&ctl, "acme", "agt-1");
    let a2 = enrolled(&ctl, "acme", "agt-2");
    report(
        &ctl,
        &a1,
        vec![
            pin("alice", "read", 'a'),
            changed(pin("alice", "write", 'b'), 'c'),
        ],
    )
    .await
    .unwrap();
    report(
        &ctl,
        &a2,
        vec![pin("bob", "read", 'a'), pin("carol", "read", 'a')],
    )
    .await
    .unwrap();
    let svc = PinService(&ctl);
    let viewer = caller("vic", Role::Viewer, Some("acme"));
    let list = svc.list(&viewer, "", false, "").await.unwrap();
    let by = |tool: &str, d: char| {
        list.iter()
            .find(|v| v.row.tool == tool && v.row.digest == digest(d))
            .unwrap_or_else(|| panic!("{tool} {d} in {list:#?}"))
    };
    assert_eq!(list.len(), 3, "{list:#?}");
    // Pending first.
    assert_eq!(list[0].state, "pending");
    assert_eq!(list[0].row.digest, digest('c'));
    assert_eq!(list[0].row.pinned_digest, digest('b'));
    assert_eq!(list[0].row.changes, vec!["description".to_owned()]);
    let read = by("read", 'a');
    assert_eq!((read.row.agents, read.row.users), (2, 3));
    assert_eq!(read.state, "pinned");
    assert_eq!(
        read.id,
        thoth_proto::pins::pin_id(&digest('5'), "read", &digest('a'))
    );
    assert_eq!(by("write", 'b').state, "pinned");
    // Filters.
    let pending = svc.list(&viewer, "", true, "").await.unwrap();
    assert_eq!(pending.len(), 1);
    let of_a2 = svc.list(&viewer, "", false, "agt-2").await.unwrap();
    assert_eq!(of_a2.len(), 1);
    assert_eq!((of_a2[0].row.agents, of_a2[0].row.users), (1, 2));

    // The same report again writes nothing; a different one replaces the agent's pins.
    let id = AgentId::trusted("agt-1");
    let pins = vec![pin("alice", "read", 'a')];
    let sha = check_tool_pins(&pins).unwrap();
    assert!(
        ctl.store
            .record_tool_pins(&id, &TenantId::trusted("acme"), &sha, &pins, 1)
            .unwrap()
    );
    assert!(
        !ctl.store
            .record_tool_pins(&id, &TenantId::trusted("acme"), &sha, &pins, 2)
            .unwrap()
    );
    assert_eq!(ctl.store.agent_tool_pins(&id).unwrap(), pins);
    assert!(svc.list(&viewer, "", true, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn hostile_reports_are_refused_whole() {
    let (_dir, ctl) = controller();
    let a = enrolled(&ctl, "acme", "agt-1");
    let too_many = vec![pin("u", "t", 'a'); MAX_TOOL_PINS + 1];
    let cases: Vec<(&str, Vec<ToolPinRecord>)> = vec![
        ("over the limit of 4096", too_many),
        ("control", vec![pin("al\u{1b}[31mice", "t", 'a')]),
        ("U+0085", vec![pin("u", "to\u{85}ol", 'a')]),
        (
            "64 lowercase hex",
            vec![ToolPinRecord {
                digest: "ABC".into(),
                ..pin("u", "t", 'a')
            }],
        ),
        (
            "64 lowercase hex",
            vec![ToolPinRecord {
                server_key: digest('A'),
                ..pin("u", "t", 'a')
            }],
        ),
        (
            "expected one of",
            vec![ToolPinRecord {
                state: "weird".into(),
                ..pin("u", "t", 'a')
            }],
        ),
        (
            "expected one of",
            vec![ToolPinRecord {
                source: "me".into(),
                ..pin("u", "t", 'a')
            }],
        ),
        (
            "expected one of",
            vec![ToolPinRecord {
                changes: vec!["all".into()],
                ..pin("u", "t", 'a')
            }],
        ),
        (
            "pending_digest",
            vec![ToolPinRecord {
                state: "changed".into(),
                ..pin("u", "t", 'a')
            }],
        ),
        ("byte limit", vec![pin(&"u".repeat(MAX_NAME + 1), "t", 'a')]),
        (
            "byte limit",
            vec![
                ToolPinRecord {
                    command: "x".repeat(MAX_COMMAND),
                    ..pin("u", "t", 'a')
                };
                300
            ],
        ),
    ];
    for (want, pins) in cases {
        match report(&ctl, &a, pins).await {
            Err(ServiceError::InvalidArgument(m)) => assert!(m.contains(want), "{want}: {m}"),
            other => panic!("{want}: {other:?}"),
        }
    }
    assert!(
        ctl.store
            .agent_tool_pins(&AgentId::trusted("agt-1"))
            .unwrap()
            .is_empty()
    );
    report(&ctl, &a, vec![pin("u", "t", 'a'); MAX_TOOL_PINS])
        .await
        .unwrap();
    // A bidirectional override in a tool's name (a hostile server's) does not refuse the
    // heartbeat: it is stored as sent, and escaped where shown.
    report(&ctl, &a, vec![pin("u", "to\u{202E}ol", 'a')])
        .await
        .unwrap();
    let stored = ctl
        .store
        .agent_tool_pins(&AgentId::trusted("agt-1"))
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].tool, "to\u{202E}ol");
}

#[tokio::test]
async fn decide_by_prefix_roles_tenants_audit_and_the_tenant_is_woken() {
    let (_dir, ctl) = controller();
    let a = enrolled(&ctl, "acme", "agt-1");
    let b = enrolled(&ctl, "globex", "agt-2");
    report(&ctl, &a, vec![changed(pin("alice", "write", 'b'), 'c')])
        .await
        .unwrap();
    report(&ctl, &b, vec![changed(pin("bob", "write", 'b'), 'd')])
        .await
        .unwrap();
    let svc = PinService(&ctl);
    let acme_admin = caller("ada", Role::Admin, Some("acme"));
    let list = svc.list(&acme_admin, "", true, "").await.unwrap();
    assert_eq!(list.len(), 1);
    let id = list[0].id.clone();
    let mut wake = ctl.hub.pin_decisions("acme");

    // Tenant isolation: globex's pins are neither listed nor decided by acme's admin.
    assert!(matches!(
        svc.list(&acme_admin, "globex", false, "").await,
        Err(ServiceError::PermissionDenied(_))
    ));
    let globex_id = svc
        .list(&caller("root", Role::Admin, None), "globex", true, "")
        .await
        .unwrap()[0]
        .id
        .clone();
    assert!(matches!(
        svc.decide(&acme_admin, "", &globex_id, true, "").await,
        Err(ServiceError::NotFound(m)) if m.contains("thothctl pins list")
    ));
    assert!(matches!(
        svc.decide(&acme_admin, "globex", &globex_id, true, "")
            .await,
        Err(ServiceError::PermissionDenied(_))
    ));
    // A viewer cannot decide; bad ids are refused.
    let viewer = caller("vic", Role::Viewer, Some("acme"));
    assert!(matches!(
        svc.decide(&viewer, "", &id, true, "").await,
        Err(ServiceError::PermissionDenied(_))
    ));
    for bad in ["abc", "zzzzzz", "0123456789abcd"] {
        assert!(
            matches!(
                svc.decide(&acme_admin, "", bad, true, "").await,
                Err(ServiceError::InvalidArgument(_))
            ),
            "{bad}"
        );
    }
    assert!(!wake.has_changed().unwrap());

    // An approver cannot decide either (second review: a policy change, tenant-wide).
    let approver = caller("ann", Role::Approver, Some("acme"));
    assert!(matches!(
        svc.decide(&approver, "", &id, true, "").await,
        Err(ServiceError::PermissionDenied(_))
    ));
    // A 6-digit prefix, uppercase, by an operator.
    let approver = caller("ann", Role::Operator, Some("acme"));
    let v = svc
        .decide(
            &approver,
            "",
            &id[..6].to_ascii_uppercase(),
            false,
            "looks like poisoning",
        )
        .await
        .unwrap();
    assert_eq!((v.id.as_str(), v.state.as_str()), (id.as_str(), "rejected"));
    let d = v.row.decision.as_ref().unwrap();
    assert_eq!((d.decided_by.as_str(), d.accepted), ("ann", false));
    assert!(
        wake.has_changed().unwrap(),
        "the tenant's streams are woken"
    );
    let _ = wake.borrow_and_update();
    // Deciding again replaces the decision.
    let v = svc
        .decide(&approver, "", &id, true, "checked")
        .await
        .unwrap();
    assert_eq!(v.state, "accepted");
    let all = svc.tenant_decisions("acme", 0).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].accepted);
    assert_eq!(all[0].digest, digest('c'));
    assert!(svc.tenant_decisions("globex", 0).await.unwrap().is_empty());
    assert!(
        svc.list(&acme_admin, "", true, "")
            .await
            .unwrap()
            .is_empty()
    );
    let after = svc.list(&acme_admin, "", false, "").await.unwrap();
    let c = after.iter().find(|v| v.id == id).unwrap();
    assert_eq!(c.state, "accepted");
    // The definition it replaces stays pinned (first use).
    assert!(
        after
            .iter()
            .any(|v| v.row.digest == digest('b') && v.state == "pinned")
    );

    let audit = ctl.store.list_audit(None, 0, 100).unwrap();
    let ok: Vec<_> = audit
        .iter()
        .filter(|r| r.action == "pins.decide" && r.outcome == "ok")
        .collect();
    assert_eq!(ok.len(), 2);
    assert!(
        ok[0].detail.contains(&format!("\"pinId\":\"{id}\"")),
        "{}",
        ok[0].detail
    );
    assert!(audit.iter().any(|r| r.action == "pins.decide"
        && r.actor == "vic"
        && r.outcome.starts_with("refused")));
}

#[tokio::test]
async fn an_ambiguous_prefix_lists_the_candidates() {
    let (_dir, ctl) = controller();
    let a = enrolled(&ctl, "acme", "agt-1");
    // Two tools whose ids share their first 6 digits (found by search: deterministic).
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let (i, j) = (0..1_000_000)
        .find_map(|i| {
            let id = thoth_proto::pins::pin_id(&digest('5'), &format!("t{i}"), &digest('a'));
            seen.insert(id[..6].to_owned(), i).map(|j| (i, j))
        })
        .expect("a 6-digit collision among a million ids");
    let pins = vec![
        pin("u", &format!("t{i}"), 'a'),
        pin("u", &format!("t{j}"), 'a'),
    ];
    let ids: Vec<String> = pins
        .iter()
        .map(|p| thoth_proto::pins::pin_id(&p.server_key, &p.tool, &p.digest))
        .collect();
    report(&ctl, &a, pins).await.unwrap();
    let admin = caller("ada", Role::Admin, Some("acme"));
    let svc = PinService(&ctl);
    match svc.decide(&admin, "", &ids[0][..6], true, "").await {
        Err(ServiceError::InvalidArgument(m)) => {
            assert!(
                m.contains("ambiguous") && m.contains(&ids[0]) && m.contains(&ids[1]),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The whole id is unique.
    let v = svc.decide(&admin, "", &ids[1], true, "").await.unwrap();
    assert_eq!(v.id, ids[1]);
}

fn event(id: u64, kind: &str, detail: serde_json::Value) -> StoredEventRecord {
    let json =
        serde_json::json!({"eventId": format!("e{id}"), "eventType": kind, "detail": detail});
    StoredEventRecord {
        event_id: format!("e{id}"),
        tenant: "acme".into(),
        agent_id: "agt-1".into(),
        seq: id,
        event_type: kind.into(),
        timestamp: "2026-11-30T10:00:00Z".into(),
        chain_ok: true,
        json: json.to_string(),
        ..StoredEventRecord::default()
    }
}

#[tokio::test]
async fn events_filter_by_types_and_dlp_findings() {
    use crate::service::events::{EventQuery, EventService};
    let (_dir, ctl) = controller();
    let events = vec![
        event(
            1,
            "TOOL_CALL_POST",
            serde_json::json!({"dlp": [{"detector": "aws_secret_key", "action": "redact"}]}),
        ),
        event(
            2,
            "TOOL_CALL_PRE",
            serde_json::json!({"dlp": [{"detector": "github_token"}, {"detector": "jwt"}]}),
        ),
        event(3, "TOOL_CALL_PRE", serde_json::json!({})),
        event(
            4,
            "TOOL_DEFINITION_CHANGED",
            serde_json::json!({"changes": ["schema"]}),
        ),
        event(
            5,
            "TOOL_NAME_SHADOWED",
            serde_json::json!({"dlp": "not a list"}),
        ),
        event(
            6,
            "TOOL_CALL_POST",
            serde_json::json!({"dlp": ["aws_secret_key", 3]}),
        ),
    ];
    ctl.store
        .commit_events(&AgentId::trusted("agt-1"), &events, None)
        .unwrap();
    let svc = EventService(&ctl);
    let viewer = caller("vic", Role::Viewer, Some("acme"));
    let ids = |v: Vec<StoredEventRecord>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let q = |f: fn(&mut EventQuery)| {
        let mut q = EventQuery::default();
        f(&mut q);
        q
    };
    let got = svc.query(&viewer, q(|q| q.dlp_only = true)).await.unwrap();
    assert_eq!(ids(got), vec![1, 2, 5, 6]);
    let got = svc
        .query(&viewer, q(|q| q.dlp_detector = "jwt".into()))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![2]);
    let got = svc
        .query(&viewer, q(|q| q.dlp_detector = "aws_secret_key".into()))
        .await
        .unwrap();
    assert_eq!(ids(got), vec![1]);
    let got = svc
        .query(
            &viewer,
            q(|q| {
                q.event_types = vec![
                    "TOOL_DEFINITION_CHANGED".into(),
                    "TOOL_NAME_SHADOWED".into(),
                ]
            }),
        )
        .await
        .unwrap();
    assert_eq!(ids(got), vec![4, 5]);
    let got = svc
        .query(
            &viewer,
            q(|q| {
                q.event_type = "TOOL_CALL_PRE".into();
                q.event_types = vec!["TOOL_CALL_POST".into()];
                q.dlp_only = true;
            }),
        )
        .await
        .unwrap();
    assert_eq!(ids(got), vec![1, 2, 6]);
    for bad in [
        q(|q| q.dlp_detector = "x' OR 1=1 --".into()),
        q(|q| q.event_types = vec!["A B".into()]),
        q(|q| q.event_types = vec!["T".into(); 33]),
    ] {
        assert!(matches!(
            svc.query(&viewer, bad).await,
            Err(ServiceError::InvalidArgument(_))
        ));
    }
}
