//! Stored behavioral events, queried by admins.

use crate::controller::Controller;
use crate::service::{Caller, Need, ServiceError};
use crate::store::{EventFilter, StoredEventRecord};

/// An event query as an admin asks it (empty strings: no filter).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Tenant (empty: the caller's scope, or all for an unscoped caller).
    pub tenant: String,
    /// Agent.
    pub agent_id: String,
    /// Session.
    pub session_id: String,
    /// Tool.
    pub tool_name: String,
    /// Event type.
    pub event_type: String,
    /// RFC 3339 lower bound.
    pub since: String,
    /// RFC 3339 upper bound.
    pub until: String,
    /// After this cursor.
    pub after_id: u64,
    /// At most (0: 100; at most 10,000).
    pub limit: u32,
    /// Oldest first instead of the newest.
    pub oldest_first: bool,
    /// Any of these event types (besides `event_type`).
    pub event_types: Vec<String>,
    /// Only events with a DLP finding (`detail.dlp`).
    pub dlp_only: bool,
    /// Only events with a DLP finding of this detector.
    pub dlp_detector: String,
}

/// Most event types in one query.
pub const MAX_EVENT_TYPES: usize = 32;
/// Longest event type or detector id, bytes.
const MAX_TYPE: usize = 64;

/// Whether `s` is 1-64 characters of A-Z, a-z, 0-9, '_' or '.' (event types, detector ids).
fn plain_id(s: &str) -> bool {
    (1..=MAX_TYPE).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The event service.
pub struct EventService<'a>(pub &'a Controller);

impl EventService<'_> {
    /// Events matching the query, oldest first.
    pub async fn query(
        &self,
        c: &Caller,
        r: EventQuery,
    ) -> Result<Vec<StoredEventRecord>, ServiceError> {
        let ctl = self.0;
        let resolved = c
            .authorize(ctl, "events.query", Need::Read, &r.tenant)
            .await?;
        let scope = c.list_scope(&r.tenant, resolved);
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        for (name, v) in [("since", &r.since), ("until", &r.until)] {
            if !v.is_empty() && humantime::parse_rfc3339_weak(v).is_err() {
                return Err(ServiceError::InvalidArgument(format!(
                    "{name} {v:?} is not an RFC 3339 time like 2026-11-24T10:00:00Z"
                )));
            }
        }
        if r.event_types.len() > MAX_EVENT_TYPES {
            return Err(ServiceError::InvalidArgument(format!(
                "{} event types, over the limit of {MAX_EVENT_TYPES}",
                r.event_types.len()
            )));
        }
        let mut types: Vec<String> = opt(&r.event_type).into_iter().collect();
        for t in r.event_types.iter().filter(|t| !t.is_empty()) {
            if !plain_id(t) {
                return Err(ServiceError::InvalidArgument(format!(
                    "event type {:?}: use letters, digits and '_' (e.g. TOOL_DEFINITION_CHANGED)",
                    t.chars().take(80).collect::<String>()
                )));
            }
            if !types.contains(t) {
                types.push(t.clone());
            }
        }
        if !r.dlp_detector.is_empty() && !plain_id(&r.dlp_detector) {
            return Err(ServiceError::InvalidArgument(format!(
                "detector {:?}: use a detector id such as aws_secret_key",
                r.dlp_detector.chars().take(80).collect::<String>()
            )));
        }
        let filter = EventFilter {
            tenant: scope.map(|t| t.as_str().to_owned()),
            agent_id: opt(&r.agent_id),
            session_id: opt(&r.session_id),
            tool_name: opt(&r.tool_name),
            event_types: types,
            dlp_only: r.dlp_only || !r.dlp_detector.is_empty(),
            dlp_detector: opt(&r.dlp_detector),
            since: opt(&r.since),
            until: opt(&r.until),
            after_id: r.after_id,
            limit: if r.limit == 0 {
                100
            } else {
                r.limit.min(10_000)
            },
            newest: !r.oldest_first,
            ..Default::default()
        };
        Ok(ctl.db(move |s| s.query_events(&filter)).await?)
    }
}
