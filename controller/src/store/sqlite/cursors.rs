//! SQLite: sink cursors.

use super::*;

impl SinkCursorStore for SqliteStore {
    fn sink_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        self.read()
            .query_row(
                "SELECT last_id FROM sink_cursors WHERE sink = ?1",
                params![sink],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.unwrap_or(0) as u64)
            .map_err(backend)
    }

    fn set_sink_cursor(&self, sink: &str, id: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sink_cursors (sink, last_id) VALUES (?1, ?2)
                 ON CONFLICT(sink) DO UPDATE SET last_id = excluded.last_id",
                params![sink, id as i64],
            )
            .map_err(backend)?;
        Ok(())
    }
}
