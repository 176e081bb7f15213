//! Admin credentials can be listed and revoked (issue 13, finding 17): a revoked admin's open
//! connection is refused at its next call, its next connection at the TLS handshake, and
//! everyone else keeps working.

mod common;

use std::time::{Duration, SystemTime};

use common::TestController;
use thoth_client::{self as client, Credentials};
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

fn der_of(creds: &Credentials) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(creds.cert_pem.as_ref().unwrap().as_bytes())
        .unwrap()
        .to_vec()
}

/// Issue 13 review (L11): a first use that passed the deny list just before a revocation by
/// name, and records its credential just after it, records it revoked: it does not survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_use_recorded_just_after_a_revocation_by_name_is_recorded_revoked() {
    use thoth_controller::store::AdminStore;
    let t = TestController::start().await;
    let erin = issue(&t, "erin", Role::Operator, false);
    let der = der_of(&erin);
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        thoth_controller::store::sqlite::SqliteStore::open(&dir.path().join("db.sqlite")).unwrap(),
    );
    let now = 1_700_000_000;
    // The revocation by name commits...
    store
        .revoke_admins("erin", "admin", "laptop stolen", now)
        .unwrap();
    // ...then the racing first use records the credential it checked before...
    let first_use = thoth_controller::admins::record_for(&der, "first use", now + 1).unwrap();
    store.record_admin(&first_use).unwrap();
    // ...(and the revocation's own "every unrecorded credential of erin" row, as a separate
    // step did before: a no-op now that the revocation wrote it in its transaction).
    store
        .record_admin(&thoth_controller::store::AdminCredentialRecord {
            fingerprint: thoth_controller::admins::unrecorded_id("erin"),
            name: "erin".into(),
            recorded_at: now,
            source: "revoked by name".into(),
            revoked_at: Some(now),
            revoked_by: "admin".into(),
            reason: "laptop stolen".into(),
            ..Default::default()
        })
        .unwrap();
    let row = store
        .list_admins()
        .unwrap()
        .into_iter()
        .find(|a| a.fingerprint == first_use.fingerprint)
        .expect("recorded");
    assert_eq!(row.revoked_at, Some(now), "{row:?}");
    assert_eq!(
        (row.revoked_by.as_str(), row.reason.as_str()),
        ("admin", "laptop stolen")
    );
    // And the deny list (loaded, or noted from the stored row) refuses it.
    let gate = thoth_controller::admins::AdminGate::load(store.clone()).unwrap();
    assert!(gate.refusal(&first_use.fingerprint, "erin").is_some());
    assert!(gate.refusal_for_der(&der).is_some());
    // A credential recorded for another name is recorded as it is.
    let frank = issue(&t, "frank", Role::Operator, false);
    let rec = thoth_controller::admins::record_for(&der_of(&frank), "first use", now).unwrap();
    store.record_admin(&rec).unwrap();
    assert!(
        store
            .list_admins()
            .unwrap()
            .iter()
            .any(|a| a.fingerprint == rec.fingerprint && a.revoked_at.is_none())
    );
}

/// Issue 13 review (L11): the TLS verifier never reads the store. An unknown credential of a
/// revoked name completes its first handshake and is refused by the request layer, which reads
/// the store once (off the verifier); its later handshakes are refused from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_credential_of_a_revoked_name_is_looked_up_once_by_the_request_layer_not_the_handshake()
 {
    let t = TestController::start().await;
    let erin = issue(&t, "erin", Role::Operator, false);
    let mut admin = t.admin().await;
    revoke(&mut admin, "erin").await.unwrap();
    let e = fresh_call(&t, &erin).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(
        e.message().contains("is not one issued since"),
        "the request layer, not a store read in the handshake, refuses it: {e}"
    );
    // Known unrecorded now (negative cache): refused at the handshake.
    let e = fresh_call(&t, &erin).await.unwrap_err();
    assert!(!e.message().contains("is not one issued since"), "{e}");
    // One issued and recorded since works at once.
    let erin2 = issue(&t, "erin", Role::Operator, true);
    assert_eq!(fresh_call(&t, &erin2).await.unwrap(), "erin");
}
