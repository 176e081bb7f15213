//! Admin credentials can be listed and revoked (issue 13, finding 17): a revoked admin's open
//! connection is refused at its next call, its next connection at the TLS handshake, and
//! everyone else keeps working.

mod common;

use std::time::{Duration, SystemTime};

use common::TestController;
use thoth_controller::client::{self, Credentials};
use thoth_controller::datadir;
use thoth_controller::pki::{Identity, Role};
use thoth_proto::fleet::{self as pb, admin_client::AdminClient};
use tonic::Code;
use tonic::transport::Channel;

/// A credential made the way `thoth-controller issue-admin` makes one (recorded), or the way
/// older versions did (`record: false`: never recorded).
fn issue(t: &TestController, name: &str, role: Role, record: bool) -> Credentials {
    let out = t
        .data()
        .join(format!("cred-{name}-{}", uuid::Uuid::now_v7()));
    let data = thoth_controller::DataDir::load(t.data()).unwrap();
    let cert = datadir::write_admin_credential(
        &out,
        &data.ca,
        &Identity::Admin {
            name: name.into(),
            role,
            tenant: None,
        },
        SystemTime::now(),
    )
    .unwrap();
    if record {
        datadir::record_admin_credential(t.data(), &cert, "issue-admin").unwrap();
    }
    Credentials::from_dir(&out).unwrap()
}

async fn whoami(c: &mut AdminClient<Channel>) -> Result<String, tonic::Status> {
    Ok(c.who_am_i(pb::WhoAmIRequest {}).await?.into_inner().name)
}

/// A new connection with `creds`: the error of connecting or of its first call.
async fn fresh_call(t: &TestController, creds: &Credentials) -> Result<String, tonic::Status> {
    let ep = client::endpoint(&t.url, creds, Some(Duration::from_secs(10))).unwrap();
    let ch = ep
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    whoami(&mut AdminClient::new(ch)).await
}

async fn revoke(
    c: &mut AdminClient<Channel>,
    target: &str,
) -> Result<Vec<pb::AdminCredential>, tonic::Status> {
    Ok(c.revoke_admin(pb::RevokeAdminRequest {
        id_or_name: target.into(),
        reason: "laptop stolen".into(),
    })
    .await?
    .into_inner()
    .admins)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_is_refused_on_its_open_connection_and_at_the_next_handshake() {
    let t = TestController::start().await;
    let bob = issue(&t, "bob", Role::Operator, true);
    let mut bob_conn = t.admin_as(&bob).await;
    assert_eq!(whoami(&mut bob_conn).await.unwrap(), "bob");
    let mut admin = t.admin().await;

    // init and issue-admin recorded their credentials.
    let list = admin
        .list_admins(pb::ListAdminsRequest {})
        .await
        .unwrap()
        .into_inner()
        .admins;
    let names: Vec<(&str, &str)> = list
        .iter()
        .map(|a| (a.name.as_str(), a.source.as_str()))
        .collect();
    assert!(names.contains(&("admin", "init")), "{names:?}");
    assert!(names.contains(&("bob", "issue-admin")), "{names:?}");
    assert!(list.iter().any(|a| a.name == "admin" && a.current));

    // Only an admin may revoke; bob (operator) may not, and that is audited as refused.
    let e = revoke(&mut bob_conn, "admin").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    // Nobody revokes the credential they call with (an admin always remains).
    let e = revoke(&mut admin, "admin").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    let bob_id = list.iter().find(|a| a.name == "bob").unwrap().id.clone();
    let revoked = revoke(&mut admin, &bob_id).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].revoked_by, "admin");
    assert_eq!(revoked[0].reason, "laptop stolen");

    // Bob's open connection: the next call is refused.
    let e = whoami(&mut bob_conn).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("revoked"), "{e}");
    // Bob's next connection: refused at the handshake, before any request is served.
    let e = fresh_call(&t, &bob).await.unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(
        !e.message().contains("was revoked"),
        "the handshake, not the request layer, refuses it: {e}"
    );
    // Revoked by id, only that credential goes: another (even unrecorded) one of bob works.
    let bob2 = issue(&t, "bob", Role::Operator, false);
    assert_eq!(fresh_call(&t, &bob2).await.unwrap(), "bob");
    // Everyone else still works; the revocation is listed and audited.
    assert_eq!(whoami(&mut admin).await.unwrap(), "admin");
    let carol = issue(&t, "carol", Role::Viewer, true);
    assert_eq!(fresh_call(&t, &carol).await.unwrap(), "carol");
    let list = admin
        .list_admins(pb::ListAdminsRequest {})
        .await
        .unwrap()
        .into_inner()
        .admins;
    assert!(
        list.iter()
            .any(|a| a.name == "bob" && a.revoked_at_unix > 0)
    );
    let audit = admin
        .list_audit(pb::ListAuditRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        audit.iter().any(|e| e.action == "admins.revoke"
            && e.outcome == "ok"
            && e.detail.contains(&bob_id)),
        "{audit:?}"
    );

    // The deny list survives a restart.
    let mut t = t;
    t.restart().await;
    assert!(fresh_call(&t, &bob).await.is_err());
    assert_eq!(fresh_call(&t, &carol).await.unwrap(), "carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_issued_before_recording_are_recorded_at_first_use_and_revocable_by_name() {
    let t = TestController::start().await;
    // Issued by an older controller (not recorded): one used since, one never used.
    let dave = issue(&t, "dave", Role::Admin, false);
    let erin = issue(&t, "erin", Role::Operator, false);
    assert_eq!(fresh_call(&t, &dave).await.unwrap(), "dave");
    let mut admin = t.admin().await;
    let list = admin
        .list_admins(pb::ListAdminsRequest {})
        .await
        .unwrap()
        .into_inner()
        .admins;
    assert!(
        list.iter()
            .any(|a| a.name == "dave" && a.source == "first use"),
        "{list:?}"
    );
    assert!(!list.iter().any(|a| a.name == "erin"));

    // Revoking a name refuses its unrecorded credentials too.
    let revoked = revoke(&mut admin, "erin").await.unwrap();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].id.starts_with("unrecorded:"));
    assert!(fresh_call(&t, &erin).await.is_err());
    let revoked = revoke(&mut admin, "dave").await.unwrap();
    assert!(revoked.iter().any(|a| a.id.starts_with("sha256:")));
    assert!(fresh_call(&t, &dave).await.is_err());
    // A credential issued (and recorded) for that name afterwards works.
    let erin2 = issue(&t, "erin", Role::Operator, true);
    assert_eq!(fresh_call(&t, &erin2).await.unwrap(), "erin");
    assert_eq!(whoami(&mut admin).await.unwrap(), "admin");
}
