//! Shared by the installer's tests and the packaging tests in the end-to-end crate
//! (`tests/tests/packages.rs` includes this file): the binaries, fixed settings, running the
//! installer, and reading back a tree.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const FP: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";
pub(crate) const ROOT_KEY: &str = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
pub(crate) const TOKEN: &str = "tok-0123456789.s3cr3t-token-value";

/// The workspace root (both crates that include this file sit one level below it).
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory holding the built binaries (thoth, thoth-agent, thoth-installer): the one
/// above the test executable's `deps/`. Cargo builds a package's binaries for its own tests;
/// the end-to-end crate's tests need `cargo build --workspace --bins` first (`scripts/test`).
pub(crate) fn bins() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The installer binary.
pub(crate) fn installer() -> PathBuf {
    let p = bins().join(format!("thoth-installer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// Runs the installer with `args` and `env` (THOTH_ENROLL_TOKEN and the platform cleared).
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(installer());
    c.args(args)
        .env_remove("THOTH_ENROLL_TOKEN")
        .env_remove("THOTH_INSTALLER_PLATFORM");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Stdout and stderr.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Permission bits.
pub(crate) fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every file and directory under `root`, relative, sorted, directories with a trailing `/`.
pub(crate) fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &e.path(), out);
            } else {
                out.push(rel);
            }
        }
    }
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

/// The settings of `packaging/mdm/macos/com.thoth.agent.mobileconfig` with its placeholders
/// filled in: the dictionary macOS writes to /Library/Managed Preferences.
pub(crate) fn mobileconfig_settings(controller: &str, tenant: &str) -> plist::Dictionary {
    let text =
        std::fs::read_to_string(repo().join("packaging/mdm/macos/com.thoth.agent.mobileconfig"))
            .unwrap()
            .replace("REPLACE_CONTROLLER_URL", controller)
            .replace("REPLACE_TENANT", tenant)
            .replace("REPLACE_CA_FINGERPRINT", FP)
            .replace("REPLACE_ROOT_KEY", ROOT_KEY)
            .replace("REPLACE_ENROLL_TOKEN", TOKEN);
    let profile: plist::Value = plist::from_bytes(text.as_bytes()).expect("the profile is a plist");
    let content = profile.as_dictionary().unwrap()["PayloadContent"]
        .as_array()
        .unwrap();
    let payload = content
        .iter()
        .map(|p| p.as_dictionary().unwrap())
        .find(|p| p["PayloadType"].as_string() == Some("com.thoth.agent"))
        .expect("a com.thoth.agent payload");
    payload.clone()
}

/// Writes managed preferences as macOS does (binary plist) under `root`.
pub(crate) fn write_managed_prefs(root: &Path, settings: &plist::Dictionary) {
    let p = root.join("Library/Managed Preferences/com.thoth.agent.plist");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    plist::to_file_binary(&p, &plist::Value::Dictionary(settings.clone())).unwrap();
}

/// Asserts that none of `rels` exists under `root`.
pub(crate) fn assert_absent(root: &Path, rels: &[&str]) {
    for rel in rels {
        assert!(!root.join(rel).exists(), "{rel} left behind");
    }
}
