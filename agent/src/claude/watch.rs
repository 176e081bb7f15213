//! The agent's watcher (filled in below).
