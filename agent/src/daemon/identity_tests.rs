use thoth_endpoint::state::StateDir;

use super::*;

#[test]
fn the_key_is_made_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let s = StateDir::new(dir.path());
    s.create().unwrap();
    // Keys are private.
    let key = key_or_new(&s).unwrap();
    assert_eq!(key_or_new(&s).unwrap(), key, "made once");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    assert!(!csr(&s).unwrap().is_empty());
}
