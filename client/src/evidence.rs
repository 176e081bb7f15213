//! Verifying stored events over the admin API (`thothctl events verify`): every stored event of
//! a tenant (or one agent) is read in commit order and checked exactly as `thoth events verify`
//! checks a SIEM file — hash links recomputed, every `CHAIN_HEAD` record matched against its
//! chain and its signature and certificate checked against the CA. The `chain_ok` flag the
//! store keeps is what ingest saw, and is never taken as proof here.

use thoth_proto::evidence::TrustAnchors;
use thoth_proto::fleet::{self as pb, admin_client::AdminClient};
use thoth_proto::{ChainReport, Verifier};
use tonic::transport::Channel;

/// Rows read per request.
const PAGE: u32 = 5_000;

/// What verifying the stored events found.
pub enum StoredVerdict {
    /// No break; the report says how much is signed.
    Intact(ChainReport),
    /// At least one break. Verification went on past each one (the chain that broke in a new
    /// epoch): `report.breaks` lists them all, their `line` being the store's event id.
    Broken {
        /// The store's id of the event where the first break shows.
        id: u64,
        /// What is wrong there.
        reason: String,
        /// Everything found, every break included.
        report: ChainReport,
    },
}

/// Reads every stored event of `tenant` (empty: the caller's) and, optionally, one agent, and
/// verifies them against `ca`.
pub async fn verify_stored(
    admin: &mut AdminClient<Channel>,
    tenant: &str,
    agent_id: &str,
    ca: &TrustAnchors,
) -> Result<StoredVerdict, tonic::Status> {
    let mut verifier = Verifier::new(Some(ca));
    let mut after = 0u64;
    loop {
        let page = admin
            .query_events(pb::EventQuery {
                tenant: tenant.to_owned(),
                agent_id: agent_id.to_owned(),
                limit: PAGE,
                after_id: after,
                oldest_first: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .events;
        for e in &page {
            // A break is kept in the report; the rest is verified all the same.
            // Whether a row is the controller's own record, and whose chain an agent's event is
            // on, is decided by the store (provenance), never by its JSON: an agent can plant
            // neither "controller" alerts nor events on another agent's chain.
            let _ =
                verifier.push_stored(e.id as usize, e.json.as_bytes(), e.controller, &e.agent_id);
            after = e.id;
        }
        if page.len() < PAGE as usize {
            let report = verifier.finish();
            return Ok(match report.breaks.first() {
                Some(b) => StoredVerdict::Broken {
                    id: b.line as u64,
                    reason: b.reason.clone(),
                    report,
                },
                None => StoredVerdict::Intact(report),
            });
        }
    }
}
