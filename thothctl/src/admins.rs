//! `thothctl admins list|revoke`: recorded admin credentials, and their revocation.

use clap::Subcommand;
use thoth_proto::fleet as pb;

use crate::ctx::{Ctx, Result};
use crate::render::{iso, table, when};

#[derive(Subcommand)]
pub(crate) enum AdminsCmd {
    /// Recorded admin credentials: made by `thoth-controller init` / `issue-admin`, or seen at
    /// first use (issued before credentials were recorded). Admin role.
    List,
    /// Revoke admin credentials by id (sha256:…) or by name (every credential of that name,
    /// including unrecorded ones issued before credentials were recorded). Refused at the next
    /// connection and the next call. Admin role, all tenants; not the credential you call with.
    Revoke {
        /// A credential id (from `thothctl admins list`) or an admin name.
        id_or_name: String,
        /// Why (kept with the revocation and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn json(a: &pb::AdminCredential) -> serde_json::Value {
    serde_json::json!({
        "id": a.id, "name": a.name, "role": a.role,
        "tenantScope": if a.tenant_scope.is_empty() { "*" } else { a.tenant_scope.as_str() },
        "notAfter": iso(a.not_after_unix), "recordedAt": iso(a.recorded_at_unix),
        "source": a.source, "revokedAt": iso(a.revoked_at_unix), "revokedBy": a.revoked_by,
        "reason": a.reason, "current": a.current,
    })
}

fn print(ctx: &Ctx, admins: &[pb::AdminCredential]) {
    if ctx.global.json {
        ctx.print_json(serde_json::Value::Array(admins.iter().map(json).collect()));
        return;
    }
    let rows: Vec<Vec<String>> = admins
        .iter()
        .map(|a| {
            vec![
                format!("{}{}", a.id, if a.current { " (you)" } else { "" }),
                a.name.clone(),
                if a.role.is_empty() {
                    "-".into()
                } else {
                    a.role.clone()
                },
                if a.tenant_scope.is_empty() {
                    "*".into()
                } else {
                    a.tenant_scope.clone()
                },
                a.source.clone(),
                if a.revoked_at_unix > 0 {
                    format!(
                        "REVOKED {} by {}{}",
                        when(a.revoked_at_unix),
                        a.revoked_by,
                        if a.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", a.reason)
                        }
                    )
                } else if a.not_after_unix > 0 {
                    format!("valid until {}", when(a.not_after_unix))
                } else {
                    "valid".into()
                },
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "ROLE", "TENANTS", "RECORDED", "STATUS"],
        &rows,
    );
}

pub(crate) async fn admins(ctx: &Ctx, cmd: AdminsCmd) -> Result<()> {
    let mut admin = ctx.admin().await?;
    match cmd {
        AdminsCmd::List => {
            let r = admin
                .list_admins(pb::ListAdminsRequest {})
                .await?
                .into_inner();
            print(ctx, &r.admins);
        }
        AdminsCmd::Revoke { id_or_name, reason } => {
            let r = admin
                .revoke_admin(pb::RevokeAdminRequest {
                    id_or_name: id_or_name.clone(),
                    reason,
                })
                .await?
                .into_inner();
            if r.admins.is_empty() && !ctx.global.json {
                println!("nothing to revoke: {id_or_name} is already revoked");
            } else {
                print(ctx, &r.admins);
            }
        }
    }
    Ok(())
}
