//! The file's tests: reading hostile files, replacing under races and locks.

use super::replace::BEFORE_EXCHANGE;
use super::*;
use crate::clients::claude_desktop::ClaudeDesktop;

#[test]
fn a_write_between_the_last_check_and_the_exchange_is_put_back() {
    use crate::clients::claude_code::ClaudeCode;
    let ours = "{\"numStartups\": 1, \"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
    let theirs = "{\"numStartups\": 2, \"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
    for in_place in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".claude.json");
        std::fs::write(&path, ours).unwrap();
        let (p, d) = (path.clone(), dir.path().to_path_buf());
        BEFORE_EXCHANGE.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                if in_place {
                    std::fs::write(&p, theirs).unwrap();
                } else {
                    // As Claude Code saves: a temp file renamed over.
                    let tmp = d.join(".claude.json.tmp.1.2");
                    std::fs::write(&tmp, theirs).unwrap();
                    std::fs::rename(&tmp, &p).unwrap();
                }
            }))
        });
        let r = rewrite_file(&ClaudeCode, &path, &Op::wrap("/t/thoth"), false);
        assert!(
            matches!(r, Err(FileError::Raced { .. })),
            "in place: {in_place}: {r:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            theirs,
            "in place: {in_place}"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".claude.json", ".claude.json.thoth-backup"]);
        // Tried again, it wraps their version.
        let ok = rewrite_file(&ClaudeCode, &path, &Op::wrap("/t/thoth"), false).unwrap();
        assert!(ok.written && ok.after.contains("\"numStartups\": 2"));
    }
}

const CONFIG: &str = "{\"mcpServers\": {\"files\": {\"command\": \"npx\", \"args\": []}}}\n";

#[test]
fn a_symlink_a_fifo_and_an_oversized_file_are_refused_without_following_or_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("someone-elses.json");
    std::fs::write(&other, CONFIG).unwrap();
    let link = dir.path().join("claude_desktop_config.json");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let e = read_config(&link).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    // Rewriting through the link is refused too, and neither file changes.
    assert!(rewrite_file(&ClaudeDesktop, &link, &Op::wrap("/t/thoth"), false).is_err());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap(), CONFIG);
    // A FIFO: refused at once (a blocking open would hang the agent or the installer).
    let fifo = dir.path().join("fifo.json");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let e = read_config(&fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // A sparse file far past the limit: refused without reading it.
    let big = dir.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_CONFIG_BYTES * 256)
        .unwrap();
    let e = read_config(&big).unwrap_err();
    assert!(e.to_string().contains("bytes"), "{e}");
    assert_eq!(read_config(&other).unwrap().0, CONFIG.as_bytes());
}

#[test]
fn a_directory_that_is_a_symlink_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("elsewhere");
    std::fs::create_dir(&real).unwrap();
    std::fs::write(real.join("claude_desktop_config.json"), CONFIG).unwrap();
    // ~/.config/Claude swapped for a symlink to another directory.
    let link = dir.path().join("Claude");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let r = rewrite_file(
        &ClaudeDesktop,
        &link.join("claude_desktop_config.json"),
        &Op::wrap("/t/thoth"),
        false,
    );
    assert!(r.is_err(), "written through a symlinked directory");
    assert_eq!(
        std::fs::read_to_string(real.join("claude_desktop_config.json")).unwrap(),
        CONFIG
    );
    // No temp file was left in either place.
    for d in [&real, dir.path()] {
        assert!(
            std::fs::read_dir(d).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".thoth-tmp-")),
            "{}",
            d.display()
        );
    }
    // The same file through its real directory is wrapped.
    let ok = rewrite_file(
        &ClaudeDesktop,
        &real.join("claude_desktop_config.json"),
        &Op::wrap("/t/thoth"),
        false,
    )
    .unwrap();
    assert!(ok.written);
}

#[test]
fn as_root_a_file_not_owned_by_its_directorys_owner_is_not_touched() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: the ownership rule applies to root only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("claude_desktop_config.json");
    std::fs::write(&p, CONFIG).unwrap();
    // As a hard link to another user's file would look: owned by someone else.
    std::os::unix::fs::chown(&p, Some(54321), Some(54321)).unwrap();
    let e = read_config(&p).unwrap_err();
    assert!(e.to_string().contains("not touched"), "{e}");
    assert!(rewrite_file(&ClaudeDesktop, &p, &Op::wrap("/t/thoth"), false).is_err());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), CONFIG);
    // Owned like its directory: fine.
    std::os::unix::fs::chown(dir.path(), Some(54321), Some(54321)).unwrap();
    assert!(read_config(&p).is_ok());
}

#[test]
fn as_root_a_file_reached_through_another_users_directory_is_refused_for_this_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: ownership only matters to the root agent");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (ann, bob) = (root.path().join("ann"), root.path().join("bob"));
    std::fs::create_dir_all(bob.join(".cursor")).unwrap();
    std::fs::create_dir_all(&ann).unwrap();
    let secret = bob.join(".cursor/mcp.json");
    std::fs::write(&secret, CONFIG).unwrap();
    for p in [&bob, &bob.join(".cursor"), &secret] {
        std::os::unix::fs::lchown(p, Some(41002), Some(41002)).unwrap();
    }
    std::os::unix::fs::lchown(&ann, Some(41001), Some(41001)).unwrap();
    // Ann's ~/.cursor leads into Bob's home (it could be swapped in after discovery).
    std::os::unix::fs::symlink(bob.join(".cursor"), ann.join(".cursor")).unwrap();
    let through = ann.join(".cursor/mcp.json");
    let e = read_config_as(&through, Some(41001), MAX_CONFIG_BYTES).unwrap_err();
    assert!(e.to_string().contains("not by the home's owner"), "{e}");
    let opts = Options {
        owner: Some(41001),
        ..Options::default()
    };
    let cursor = crate::host::by_id("cursor").unwrap();
    assert!(rewrite_file_with(cursor, &through, &Op::wrap("/t/thoth"), &opts).is_err());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), CONFIG);
    let scanned = crate::inventory::scan_file_as(cursor, &through, "/t/thoth", &[], Some(41001));
    assert!(
        scanned.servers.is_empty() && scanned.error.is_some(),
        "{scanned:?}"
    );
    // For Bob, the same file is fine.
    assert!(read_config_as(&secret, Some(41002), MAX_CONFIG_BYTES).is_ok());
}

#[test]
fn a_lock_dated_in_the_future_is_stale_and_a_held_lock_costs_little() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".claude.json");
    let text = "{\"mcpServers\": {\"fs\": {\"command\": \"npx\", \"args\": []}}}\n";
    std::fs::write(&path, text).unwrap();
    let code = crate::host::by_id("claude-code").unwrap();
    let lock = dir.path().join(".claude.json.lock");
    std::fs::create_dir(&lock).unwrap();
    // Touched to 2100: never "old", so it looked held for ever.
    let future = std::time::UNIX_EPOCH + std::time::Duration::from_secs(4_102_444_800);
    std::fs::File::open(&lock)
        .unwrap()
        .set_modified(future)
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = rewrite_file(code, &path, &Op::wrap("/t/thoth"), false).unwrap();
    assert!(out.written, "a future-dated lock is stale");
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // A fresh lock (held now): the rewrite gives up quickly, and goes through when told to
    // ignore it.
    std::fs::write(&path, text).unwrap();
    std::fs::File::open(&lock)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let t0 = std::time::Instant::now();
    let e = rewrite_file(code, &path, &Op::wrap("/t/thoth"), false).unwrap_err();
    assert!(matches!(e, FileError::Raced { .. }), "{e}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        t0.elapsed()
    );
    let opts = Options {
        ignore_host_lock: true,
        ..Options::default()
    };
    assert!(
        rewrite_file_with(code, &path, &Op::wrap("/t/thoth"), &opts)
            .unwrap()
            .written
    );
    assert!(lock.is_dir(), "someone else's lock is left alone");
}

#[test]
fn a_rewritten_file_never_gets_setuid_setgid_or_sticky_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claude_desktop_config.json");
    std::fs::write(&path, CONFIG).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o7644)).unwrap();
    let out = rewrite_file(&ClaudeDesktop, &path, &Op::wrap("/t/thoth"), false).unwrap();
    assert!(out.written);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
}
