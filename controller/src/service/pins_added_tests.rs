//! Tools a pinned server added (reported "added": not pinned anywhere): one pending row each,
//! decided like any other; a report that claims more than that is refused.

use super::tests::{caller, controller, digest, enrolled, pin, report};
use super::*;

fn added(user: &str, tool: &str, d: char) -> ToolPinRecord {
    ToolPinRecord {
        state: "added".into(),
        source: String::new(),
        pending_digest: digest(d),
        changes: vec!["added".into()],
        pending_description: "Exports everything.".into(),
        ..pin(user, tool, d)
    }
}

#[tokio::test]
async fn an_added_tool_is_one_pending_row_and_can_be_accepted() {
    let (_dir, ctl) = controller();
    let a1 = enrolled(&ctl, "acme", "agt-1");
    let a2 = enrolled(&ctl, "acme", "agt-2");
    report(
        &ctl,
        &a1,
        vec![pin("alice", "read", 'a'), added("alice", "export_all", 'e')],
    )
    .await
    .unwrap();
    report(&ctl, &a2, vec![added("bob", "export_all", 'e')])
        .await
        .unwrap();
    let svc = PinService(&ctl);
    let admin = caller("ada", Role::Admin, Some("acme"));
    let list = svc.list(&admin, "", false, "").await.unwrap();
    let rows: Vec<&PinView> = list.iter().filter(|v| v.row.tool == "export_all").collect();
    assert_eq!(rows.len(), 1, "one row, no pinned one: {list:#?}");
    let row = rows[0];
    assert_eq!(row.state, "pending");
    assert_eq!(row.row.digest, digest('e'));
    assert_eq!(row.row.pinned_digest, "");
    assert_eq!(row.row.changes, ["added"]);
    assert_eq!((row.row.agents, row.row.users), (2, 2));
    assert_eq!(row.row.description, "Exports everything.");
    assert!(!row.row.reports_differ);
    // Listed first, and by --pending.
    assert_eq!(list[0].row.tool, "export_all");
    let pending = svc.list(&admin, "", true, "").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, row.id);

    // Accepted by its id: recorded for the tenant's agents, no longer pending.
    let v = svc
        .decide(&admin, "", &row.id, true, "reviewed")
        .await
        .unwrap();
    assert_eq!(v.state, "accepted");
    let sent = svc.tenant_decisions("acme", 0).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].tool.as_str(),
            sent[0].digest.clone(),
            sent[0].accepted
        ),
        ("export_all", digest('e'), true)
    );
    assert_eq!(sent[0].server_key, digest('5'));
    assert!(svc.list(&admin, "", true, "").await.unwrap().is_empty());
    // The agents apply it: pinned, by an admin; still one row, accepted.
    let accepted = ToolPinRecord {
        source: "admin".into(),
        accepted: true,
        ..pin("alice", "export_all", 'e')
    };
    report(&ctl, &a1, vec![pin("alice", "read", 'a'), accepted])
        .await
        .unwrap();
    let list = svc.list(&admin, "", false, "").await.unwrap();
    let rows: Vec<&PinView> = list.iter().filter(|v| v.row.tool == "export_all").collect();
    assert_eq!(rows.len(), 1, "{list:#?}");
    assert_eq!(rows[0].state, "accepted");
}

#[tokio::test]
async fn an_added_tool_can_be_rejected() {
    let (_dir, ctl) = controller();
    let a = enrolled(&ctl, "acme", "agt-1");
    report(&ctl, &a, vec![added("alice", "export_all", 'e')])
        .await
        .unwrap();
    let svc = PinService(&ctl);
    let admin = caller("ada", Role::Operator, Some("acme"));
    let id = svc.list(&admin, "", true, "").await.unwrap()[0].id.clone();
    let v = svc.decide(&admin, "", &id, false, "").await.unwrap();
    assert_eq!(v.state, "rejected");
    let list = svc.list(&admin, "", false, "").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].state.as_str(), list[0].id.as_str()),
        ("rejected", id.as_str())
    );
    assert!(!svc.tenant_decisions("acme", 0).await.unwrap()[0].accepted);
}

#[tokio::test]
async fn an_added_report_claiming_a_pin_is_refused_whole() {
    let (_dir, ctl) = controller();
    let a = enrolled(&ctl, "acme", "agt-1");
    let cases = vec![
        // Would list a pending row for one digest and hide another behind it.
        ToolPinRecord {
            pending_digest: digest('f'),
            ..added("u", "t", 'e')
        },
        ToolPinRecord {
            pending_digest: String::new(),
            ..added("u", "t", 'e')
        },
        ToolPinRecord {
            accepted: true,
            ..added("u", "t", 'e')
        },
        ToolPinRecord {
            source: "admin".into(),
            ..added("u", "t", 'e')
        },
    ];
    for p in cases {
        match report(&ctl, &a, vec![pin("u", "read", 'a'), p.clone()]).await {
            Err(ServiceError::InvalidArgument(m)) => {
                assert!(m.contains("tool_pins[1]"), "{m}");
            }
            other => panic!("{p:?}: {other:?}"),
        }
    }
    assert!(
        ctl.store
            .agent_tool_pins(&AgentId::trusted("agt-1"))
            .unwrap()
            .is_empty()
    );
}
