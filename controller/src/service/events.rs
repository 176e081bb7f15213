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
        let filter = EventFilter {
            tenant: scope.map(|t| t.as_str().to_owned()),
            agent_id: opt(&r.agent_id),
            session_id: opt(&r.session_id),
            tool_name: opt(&r.tool_name),
            event_types: opt(&r.event_type).into_iter().collect(),
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
