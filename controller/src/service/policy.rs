//! Policy versions: push, show, history, rollback, and the signing-key rotation.

use crate::controller::{Controller, PushError};
use crate::datadir::SigningIdentity;
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_len};
use crate::store::{PolicyRecord, StoreError};

/// A policy version and how many agents report it applied.
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    /// The version.
    pub record: PolicyRecord,
    /// Agents of the tenant that report it applied (0 for a version just pushed).
    pub agents_applied: u64,
}

/// The policy service.
pub struct PolicyService<'a>(pub &'a Controller);

fn push_error(e: PushError) -> ServiceError {
    match e {
        PushError::Invalid(msg) => {
            ServiceError::InvalidArgument(format!("policy does not validate: {msg}"))
        }
        PushError::Store(StoreError::Conflict(msg)) => {
            ServiceError::Conflict(format!("another push took this version; retry ({msg})"))
        }
        PushError::Store(e) => e.into(),
    }
}

impl PolicyService<'_> {
    /// Validates, signs and publishes `document` as the tenant's next version.
    pub async fn push(
        &self,
        c: &Caller,
        tenant: &str,
        document: String,
        source: String,
        comment: String,
    ) -> Result<PolicyVersion, ServiceError> {
        let ctl = self.0;
        let tenant = c
            .authorize(ctl, "policy.push", Need::Manage, tenant)
            .await?;
        check_len("comment", &comment, MAX_TEXT)?;
        check_len("source", &source, MAX_TEXT)?;
        let source = if source.is_empty() {
            "<pushed policy>".to_owned()
        } else {
            source
        };
        let pushed = ctl
            .push_policy(tenant.as_str(), document, &source, &c.name, comment, None)
            .await;
        let p = match pushed {
            Ok(p) => p,
            Err(e) => {
                let e = push_error(e);
                c.audit_refused(
                    ctl,
                    "policy.push",
                    tenant.as_str(),
                    e.message(),
                    serde_json::json!({"source": source}),
                )
                .await;
                return Err(e);
            }
        };
        c.audit_ok(
            ctl,
            "policy.push",
            tenant.as_str(),
            serde_json::json!({"version": p.version, "sha256": p.sha256, "source": source}),
        )
        .await;
        Ok(PolicyVersion {
            record: p,
            agents_applied: 0,
        })
    }

    /// One version (0: the latest).
    pub async fn get(
        &self,
        c: &Caller,
        tenant: &str,
        version: u64,
    ) -> Result<PolicyVersion, ServiceError> {
        let ctl = self.0;
        let tenant = c.authorize(ctl, "policy.show", Need::Read, tenant).await?;
        let t = tenant.clone();
        let found = ctl
            .db(move |s| {
                let p = if version == 0 {
                    s.latest_policy(&t)?
                } else {
                    s.policy(&t, version)?
                };
                let applied = match &p {
                    Some(p) => s.count_applied(&t, p.version)?,
                    None => 0,
                };
                Ok(p.map(|p| (p, applied)))
            })
            .await?;
        let Some((record, agents_applied)) = found else {
            let tenant = tenant.as_str();
            return Err(ServiceError::NotFound(if version == 0 {
                format!(
                    "tenant {tenant:?} has no policy yet: push one with `thothctl policy push FILE`"
                )
            } else {
                format!("tenant {tenant:?} has no policy version {version}")
            }));
        };
        Ok(PolicyVersion {
            record,
            agents_applied,
        })
    }

    /// Versions, newest first (`limit` 0: all).
    pub async fn history(
        &self,
        c: &Caller,
        tenant: &str,
        limit: u32,
    ) -> Result<Vec<PolicyVersion>, ServiceError> {
        let ctl = self.0;
        let tenant = c
            .authorize(ctl, "policy.history", Need::Read, tenant)
            .await?;
        Ok(ctl
            .db(move |s| {
                let mut out = Vec::new();
                for p in s.policy_history(&tenant, limit)? {
                    let agents_applied = s.count_applied(&tenant, p.version)?;
                    out.push(PolicyVersion {
                        record: p,
                        agents_applied,
                    });
                }
                Ok(out)
            })
            .await?)
    }

    /// Re-issues version `to` as the tenant's next version.
    pub async fn rollback(
        &self,
        c: &Caller,
        tenant: &str,
        to: u64,
        comment: String,
    ) -> Result<PolicyVersion, ServiceError> {
        let ctl = self.0;
        let tenant = c
            .authorize(ctl, "policy.rollback", Need::Manage, tenant)
            .await?;
        check_len("comment", &comment, MAX_TEXT)?;
        let t = tenant.clone();
        let old = ctl.db(move |s| s.policy(&t, to)).await?;
        let Some(old) = old else {
            return Err(ServiceError::NotFound(format!(
                "tenant {:?} has no policy version {to}",
                tenant.as_str()
            )));
        };
        let comment = if comment.is_empty() {
            format!("rollback to version {to}")
        } else {
            comment
        };
        let p = ctl
            .push_policy(
                tenant.as_str(),
                old.document,
                &format!("<version {to}>"),
                &c.name,
                comment,
                Some(to),
            )
            .await
            .map_err(push_error)?;
        c.audit_ok(
            ctl,
            "policy.rollback",
            tenant.as_str(),
            serde_json::json!({"toVersion": to, "newVersion": p.version}),
        )
        .await;
        Ok(PolicyVersion {
            record: p,
            agents_applied: 0,
        })
    }

    /// Makes a new signing key and re-signs every tenant's latest bundle with it; returns the
    /// key and the tenants re-signed.
    pub async fn rotate_signing_key(
        &self,
        c: &Caller,
    ) -> Result<(SigningIdentity, Vec<String>), ServiceError> {
        let ctl = self.0;
        c.authorize(ctl, "key.rotate", Need::Admin, "").await?;
        if c.scope.is_some() {
            return Err(ServiceError::PermissionDenied(
                "rotating the signing key affects every tenant: it needs an admin certificate for all tenants".into(),
            ));
        }
        let (key, tenants) = ctl
            .rotate_signing_key()
            .await
            .map_err(|e| ServiceError::Internal(format!("rotation failed: {e}")))?;
        c.audit_ok(
            ctl,
            "key.rotate",
            "",
            serde_json::json!({"keyId": key.key_id, "resigned": tenants}),
        )
        .await;
        Ok((key, tenants))
    }
}
