use std::io::Write;
use std::path::PathBuf;

use super::JsonlConfig;
use crate::sinks::error::SinkError;
use crate::store::StoredEventRecord;

/// Appends to the file (synced), rotating it first when it reached `max_bytes`.
#[derive(Clone)]
pub(in crate::sinks) struct JsonlSink {
    pub(super) path: PathBuf,
    pub(super) max_bytes: u64,
    pub(super) keep: u32,
}

impl JsonlSink {
    pub(in crate::sinks) fn new(cfg: &JsonlConfig) -> JsonlSink {
        JsonlSink {
            path: cfg.path.clone(),
            max_bytes: cfg.max_bytes,
            keep: cfg.keep,
        }
    }

    pub(in crate::sinks) async fn deliver(
        &mut self,
        events: &[StoredEventRecord],
    ) -> Result<(), SinkError> {
        let sink = self.clone();
        let buf = super::encode::lines(events);
        tokio::task::spawn_blocking(move || sink.write(&buf))
            .await
            .map_err(SinkError::Task)?
    }

    pub(super) fn write(&self, buf: &[u8]) -> Result<(), SinkError> {
        let io = |source: std::io::Error| SinkError::File {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size >= self.max_bytes {
            for i in (1..self.keep.max(1)).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1)).map_err(io)?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(io)?;
            let _ = std::fs::remove_file(rotated(&self.path, self.keep.max(1) + 1));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(buf).map_err(io)?;
        f.sync_data().map_err(io)
    }
}

/// The `i`th rotated file: `events.jsonl.1` is the newest.
pub(super) fn rotated(path: &std::path::Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}
