//! Enrollment tokens: minted (the secret is shown once and kept only as a hash), listed,
//! revoked.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::controller::{Controller, now_unix};
use crate::service::{Caller, MAX_TEXT, Need, ServiceError, check_labels, check_len};
use crate::store::TokenRecord;

/// Longest token lifetime an admin may ask for.
const MAX_TTL: u64 = 365 * 86_400;

/// What a new token is asked with.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// Tenant (empty: the caller's scope or the default).
    pub tenant: String,
    /// Labels given to agents enrolled with it.
    pub labels: HashMap<String, String>,
    /// Lifetime (0: the configured default).
    pub ttl_secs: u64,
    /// Enrollments allowed (0 counts as 1).
    pub max_uses: u32,
    /// Free text.
    pub comment: String,
}

/// The token service.
pub struct TokenService<'a>(pub &'a Controller);

/// A fresh token id and secret (`<id>.<base64url secret>`).
fn new_token_secret() -> (String, String) {
    use base64::Engine;
    let mut id = [0u8; 5];
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
    let id = format!("tok-{}", hex::encode(id));
    let token = format!(
        "{id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    (id, token)
}

impl TokenService<'_> {
    /// Mints a token; returns its record and the secret (shown once).
    pub async fn create(
        &self,
        c: &Caller,
        r: NewToken,
    ) -> Result<(TokenRecord, String), ServiceError> {
        let ctl = self.0;
        let tenant = c
            .authorize(ctl, "token.create", Need::Manage, &r.tenant)
            .await?;
        let labels = check_labels(&r.labels)?;
        check_len("comment", &r.comment, MAX_TEXT)?;
        if r.ttl_secs > MAX_TTL {
            return Err(ServiceError::InvalidArgument(
                "a token may live at most 365 days".into(),
            ));
        }
        let ttl = if r.ttl_secs == 0 {
            ctl.config.token_ttl.as_secs()
        } else {
            r.ttl_secs
        };
        let (id, token) = new_token_secret();
        let now = now_unix();
        let record = TokenRecord {
            id,
            hash: hex::encode(Sha256::digest(token.as_bytes())),
            tenant: tenant.as_str().to_owned(),
            created_at: now,
            expires_at: now + ttl as i64,
            max_uses: r.max_uses.max(1),
            uses: 0,
            labels,
            revoked: false,
            created_by: c.name.clone(),
            comment: r.comment,
        };
        let rec = record.clone();
        ctl.db(move |s| s.insert_token(&rec)).await?;
        c.audit_ok(
            ctl,
            "token.create",
            tenant.as_str(),
            serde_json::json!({"tokenId": record.id, "maxUses": record.max_uses, "expiresAt": record.expires_at}),
        )
        .await;
        Ok((record, token))
    }

    /// Tokens of the tenant asked (or, for an unscoped caller naming none, of all).
    pub async fn list(
        &self,
        c: &Caller,
        tenant: &str,
        include_inactive: bool,
    ) -> Result<Vec<TokenRecord>, ServiceError> {
        let ctl = self.0;
        let resolved = c.authorize(ctl, "token.list", Need::Read, tenant).await?;
        let scope = c.list_scope(tenant, resolved);
        Ok(ctl
            .db(move |s| s.list_tokens(scope.as_ref(), include_inactive, now_unix()))
            .await?)
    }

    /// Revokes a token.
    pub async fn revoke(&self, c: &Caller, id: &str) -> Result<TokenRecord, ServiceError> {
        let ctl = self.0;
        check_len("id", id, 64)?;
        let i = id.to_owned();
        let found = ctl.db(move |s| s.token(&i)).await?;
        let Some(token) = found else {
            // Check the caller first so strangers learn nothing about ids.
            c.authorize(ctl, "token.revoke", Need::Manage, "").await?;
            return Err(ServiceError::NotFound(format!(
                "no enrollment token {id:?}"
            )));
        };
        let tenant = c
            .authorize(ctl, "token.revoke", Need::Manage, &token.tenant)
            .await?;
        let i = id.to_owned();
        let t = ctl
            .db(move |s| s.revoke_token(&i))
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no enrollment token {id:?}")))?;
        c.audit_ok(
            ctl,
            "token.revoke",
            tenant.as_str(),
            serde_json::json!({"tokenId": id}),
        )
        .await;
        Ok(t)
    }
}
