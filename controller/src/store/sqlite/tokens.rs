//! SQLite: enrollment tokens and enrollment.

use super::*;

impl TokenStore for SqliteStore {
    fn insert_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    t.id,
                    t.hash,
                    t.tenant,
                    t.created_at,
                    t.expires_at,
                    t.max_uses,
                    t.uses,
                    labels_to_json(&t.labels),
                    t.revoked,
                    t.created_by,
                    t.comment
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    fn list_tokens(
        &self,
        tenant: Option<&TenantId>,
        include_inactive: bool,
        now: i64,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM tokens
                 WHERE (?1 IS NULL OR tenant = ?1)
                   AND (?2 OR (revoked = 0 AND expires_at > ?3 AND uses < max_uses))
                 ORDER BY created_at, id"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, include_inactive, now], token_row)
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read()
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"),
                params![id],
                token_row,
            )
            .optional()
            .map_err(backend)
    }

    fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn();
        conn.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", params![id])
            .map_err(backend)?;
        conn.query_row(
            &format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"),
            params![id],
            token_row,
        )
        .optional()
        .map_err(backend)
    }

    fn enroll(
        &self,
        token_hash: &str,
        asserted_tenant: Option<&TenantId>,
        now: i64,
        register: &mut dyn FnMut(&TokenRecord) -> Result<AgentRecord, StoreError>,
    ) -> Result<Result<AgentRecord, RedeemError>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let token = tx
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = ?1"),
                params![token_hash],
                token_row,
            )
            .optional()
            .map_err(backend)?;
        let Some(mut token) = token else {
            return Ok(Err(RedeemError::Unknown));
        };
        let refused = if token.revoked {
            Some(RedeemError::Revoked {
                id: token.id.clone(),
            })
        } else if token.expires_at <= now {
            Some(RedeemError::Expired {
                id: token.id.clone(),
            })
        } else if token.uses >= token.max_uses {
            Some(RedeemError::Exhausted {
                id: token.id.clone(),
                uses: token.uses,
                max_uses: token.max_uses,
            })
        } else if let Some(asked) = asserted_tenant
            && asked.as_str() != token.tenant
        {
            Some(RedeemError::WrongTenant {
                asked: asked.as_str().to_owned(),
            })
        } else {
            None
        };
        if let Some(refused) = refused {
            return Ok(Err(refused));
        }
        token.uses += 1;
        tx.execute(
            "UPDATE tokens SET uses = uses + 1 WHERE id = ?1",
            params![token.id],
        )
        .map_err(backend)?;
        let agent = register(&token)?;
        tx.execute(
            &format!(
                "INSERT INTO agents ({AGENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ),
            params![
                agent.agent_id,
                agent.tenant,
                agent.hostname,
                labels_to_json(&agent.labels),
                agent.enrolled_at,
                agent.last_seen,
                agent.applied_version as i64,
                agent.stale,
                agent.last_error,
                agent.revoked_at,
                agent.cert_not_after,
                agent.inventory,
                agent.agent_version,
                agent.token_id
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Ok(agent))
    }
}
