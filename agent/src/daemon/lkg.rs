//! Saving the last-known-good bundle and raising the rollback floor: the agent's alone (proxies
//! only read them, with thoth-endpoint's `StateDir::load_lkg` and `StateDir::applied_floor`).

use thoth_endpoint::state::{StateDir, StateError, write_atomic};

/// Persists a verified bundle as last-known-good, then raises the floor.
pub(super) fn save_lkg(state: &StateDir, bytes: &[u8], version: u64) -> Result<(), StateError> {
    let p = state.lkg_path();
    write_atomic(&p, bytes, 0o644).map_err(|source| StateError::Io { path: p, source })?;
    if version > state.applied_floor() {
        let a = state.applied_path();
        write_atomic(&a, format!("{version}\n").as_bytes(), 0o644)
            .map_err(|source| StateError::Io { path: a, source })?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "lkg_tests.rs"]
mod tests;
