//! What a sink reads: an [`EventSource`], so the runner knows nothing of the controller and a
//! test can put a failing or racing store behind it.

use std::sync::Arc;

use crate::store::{EventFilter, Store, StoreError, StoredEventRecord};

/// What a sink reads: the event store, by cursor. Calls may block (the sink runs them on the
/// blocking pool). Cursors must be given out in commit order (see [`crate::store::Store`]).
pub trait EventSource: Send + Sync + 'static {
    /// The sink's saved cursor (0: from the start).
    fn cursor(&self, sink: &str) -> Result<u64, StoreError>;
    /// Saves the sink's cursor.
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError>;
    /// The highest committed cursor.
    fn high_water(&self) -> Result<u64, StoreError>;
    /// Events matching the filter, oldest first.
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError>;
}

/// The controller's store as a sink's event source.
pub struct StoreSource(pub Arc<dyn Store>);

impl EventSource for StoreSource {
    fn cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.0.sink_cursor(sink)
    }
    fn set_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.0.set_sink_cursor(sink, id)
    }
    fn high_water(&self) -> Result<u64, StoreError> {
        self.0.max_event_id()
    }
    fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEventRecord>, StoreError> {
        self.0.query_events(filter)
    }
}
