//! What the packaging tests (moved here from the installer crate, since building and reading
//! .rpm and .msi files needs the apt peers) share with the installer's own tests in
//! `installer/tests/common`: the binaries, fixed settings, running the installer, and reading
//! back a tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thoth_e2e::fleet::bin;

pub(crate) const FP: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";
pub(crate) const ROOT_KEY: &str = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
pub(crate) const TOKEN: &str = "tok-0123456789.s3cr3t-token-value";

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    thoth_e2e::repo_root()
}

/// The directory holding the built binaries (thoth, thoth-agent, thoth-installer).
pub(crate) fn bins() -> PathBuf {
    bin("thoth-installer").parent().unwrap().to_path_buf()
}

/// Runs the installer with `args` and `env` (THOTH_ENROLL_TOKEN and the platform cleared).
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin("thoth-installer"));
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
