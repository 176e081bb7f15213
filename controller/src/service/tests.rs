//! The services driven directly, without gRPC or TLS: what a second transport (an HTTP API)
//! would get.

use std::sync::Arc;

use super::policy::PolicyService;
use super::tokens::{NewToken, TokenService};
use super::*;
use crate::controller::Controller;
use crate::ids::TenantId;
use crate::pki::Role;
use crate::store::sqlite::SqliteStore;

const POLICY: &str = "name: a\nversion: 1\nservers:\n  - name: files\n    enforcement: block\n    approved_scope: [read_text_file]\n";

fn controller() -> (tempfile::TempDir, Arc<Controller>) {
    let dir = tempfile::tempdir().unwrap();
    crate::datadir::init(dir.path(), None).unwrap();
    let data = crate::DataDir::load(dir.path()).unwrap();
    let ctl = Controller::new(data, Arc::new(SqliteStore::in_memory().unwrap())).unwrap();
    (dir, ctl)
}

fn caller(name: &str, role: Role, scope: Option<&str>) -> Caller {
    Caller {
        name: name.into(),
        role,
        scope: scope.map(TenantId::trusted),
        fingerprint: format!("sha256:{name}"),
    }
}

#[tokio::test]
async fn roles_and_tenant_scopes_are_checked_and_refusals_audited() {
    let (_dir, ctl) = controller();
    let policies = PolicyService(&ctl);
    let viewer = caller("vera", Role::Viewer, None);
    let e = policies
        .push(&viewer, "acme", POLICY.into(), String::new(), String::new())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ServiceError::PermissionDenied(
            "vera has role viewer; policy.push needs operator or admin".into()
        )
    );
    let scoped = caller("otto", Role::Operator, Some("acme"));
    let e = policies
        .push(
            &scoped,
            "other",
            POLICY.into(),
            String::new(),
            String::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::PermissionDenied(_)), "{e:?}");
    let e = policies
        .push(
            &scoped,
            "Bad Tenant!",
            POLICY.into(),
            String::new(),
            String::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ServiceError::InvalidArgument(_)), "{e:?}");
    let audit = ctl.store.list_audit(None, 0, 100).unwrap();
    let refused: Vec<_> = audit
        .iter()
        .filter(|a| a.outcome.starts_with("refused: "))
        .map(|a| (a.actor.as_str(), a.tenant.as_str()))
        .collect();
    assert_eq!(refused, [("vera", "acme"), ("otto", "other")]);
}

#[tokio::test]
async fn a_push_validates_then_versions_and_a_missing_version_is_not_found() {
    let (_dir, ctl) = controller();
    let policies = PolicyService(&ctl);
    let op = caller("otto", Role::Operator, Some("acme"));
    let e = policies
        .push(&op, "", "servers: 3".into(), String::new(), String::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::InvalidArgument(m) if m.starts_with("policy does not validate")),
        "{e:?}"
    );
    // No tenant named: the caller's scope.
    let v = policies
        .push(&op, "", POLICY.into(), String::new(), "first".into())
        .await
        .unwrap();
    assert_eq!((v.record.tenant.as_str(), v.record.version), ("acme", 1));
    assert_eq!(policies.get(&op, "", 0).await.unwrap().record.version, 1);
    let e = policies.get(&op, "", 2).await.unwrap_err();
    assert_eq!(
        e,
        ServiceError::NotFound("tenant \"acme\" has no policy version 2".into())
    );
}

#[tokio::test]
async fn tokens_are_minted_listed_and_revoked_with_limits_checked() {
    let (_dir, ctl) = controller();
    let tokens = TokenService(&ctl);
    let op = caller("otto", Role::Operator, None);
    let e = tokens
        .create(
            &op,
            NewToken {
                ttl_secs: 400 * 86_400,
                ..NewToken::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ServiceError::InvalidArgument("a token may live at most 365 days".into())
    );
    let (record, secret) = tokens
        .create(
            &op,
            NewToken {
                tenant: "acme".into(),
                max_uses: 2,
                ..NewToken::default()
            },
        )
        .await
        .unwrap();
    assert!(secret.starts_with(&format!("{}.", record.id)));
    assert_eq!((record.tenant.as_str(), record.max_uses), ("acme", 2));
    let listed = tokens.list(&op, "", false).await.unwrap();
    assert_eq!(listed.len(), 1);
    let viewer = caller("vera", Role::Viewer, None);
    assert!(matches!(
        tokens.revoke(&viewer, &record.id).await,
        Err(ServiceError::PermissionDenied(_))
    ));
    assert!(tokens.revoke(&op, &record.id).await.unwrap().revoked);
    assert!(matches!(
        tokens.revoke(&op, "tok-none").await,
        Err(ServiceError::NotFound(_))
    ));
}
