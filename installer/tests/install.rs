//! The installer with `--prefix` (a temp root) and `--no-start`: layout and modes, idempotence,
//! rollback of a failure part-way, uninstall restoring users' configs, status, bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const INSTALLER: &str = env!("CARGO_BIN_EXE_thoth-installer");
const FP: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
const ROOT_KEY: &str = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=";
const TOKEN: &str = "tok-0123456789.s3cr3t-token-value";

fn bins() -> PathBuf {
    Path::new(INSTALLER).parent().unwrap().to_path_buf()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(INSTALLER);
    c.args(args).env_remove("THOTH_ENROLL_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install(prefix: &Path, tenant: &str, env: &[(&str, &str)]) -> Output {
    let token_file = prefix.parent().unwrap().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    run(
        &[
            "install",
            "--controller",
            "https://127.0.0.1:1",
            "--tenant",
            tenant,
            "--enroll-token-file",
            token_file.to_str().unwrap(),
            "--ca-fingerprint",
            FP,
            "--root-key",
            ROOT_KEY,
            "--labels",
            "team=it,site=paris",
            "--no-start",
            "--prefix",
            prefix.to_str().unwrap(),
            "--from",
            bins().to_str().unwrap(),
        ],
        env,
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn install_lays_out_the_tree_with_the_right_modes_and_never_prints_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let out = install(&prefix, "acme", &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "unreachable controller: installed, exit 3: {}",
        text(&out)
    );
    assert!(!text(&out).contains("s3cr3t"), "the token was printed");
    for (rel, m) in [
        ("usr/local/bin/thoth", 0o755),
        ("usr/local/bin/thoth-agent", 0o755),
        ("etc/thoth/enrollment-token", 0o600),
        ("etc/thoth/agent.toml", 0o644),
        ("etc/systemd/system/thoth-agent.service", 0o644),
        ("var/lib/thoth/install.json", 0o644),
    ] {
        let p = prefix.join(rel);
        assert!(p.exists(), "{rel} missing");
        assert_eq!(mode(&p), m, "{rel}");
    }
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/thoth/enrollment-token"))
            .unwrap()
            .trim(),
        TOKEN
    );
    let cfg = std::fs::read_to_string(prefix.join("etc/thoth/agent.toml")).unwrap();
    assert!(!cfg.contains("s3cr3t"), "the token is in the config");
    let parsed: toml::Value = toml::from_str(&cfg).unwrap();
    assert_eq!(parsed["labels"]["team"].as_str(), Some("it"), "{cfg}");
    assert_eq!(parsed["labels"]["site"].as_str(), Some("paris"), "{cfg}");
    // The agent accepts the written config.
    let check = Command::new(bins().join("thoth-agent"))
        .args(["check-config", "--config"])
        .arg(prefix.join("etc/thoth/agent.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // The unit is hardened and runs the installed agent.
    let unit =
        std::fs::read_to_string(prefix.join("etc/systemd/system/thoth-agent.service")).unwrap();
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=",
        "Restart=always",
        "ExecStart=",
    ] {
        assert!(unit.contains(key), "{key} missing from the unit");
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(prefix.join("etc/systemd/system/thoth-agent.service"))
            .output()
            .unwrap();
        let t = text(&v);
        assert!(!t.contains("Unknown key") && !t.contains("Invalid"), "{t}");
    }
    // Status tells the truth.
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["installed"], true);
    assert_eq!(v["service"], "stopped");
    assert_eq!(v["enrolled"], false);
    assert_eq!(v["tenant"], "acme");
}

#[test]
fn installing_twice_changes_nothing_and_a_failure_part_way_puts_back_the_previous_state() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    install(&prefix, "acme", &[]);
    let cfg = prefix.join("etc/thoth/agent.toml");
    let before = std::fs::read_to_string(&cfg).unwrap();
    let again = install(&prefix, "acme", &[]);
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    // A change of tenant that fails at the unit step: the old config is back.
    let failed = install(&prefix, "globex", &[("THOTH_INSTALLER_FAIL_AT", "unit")]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
    assert!(text(&failed).contains("put back"));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), before);
    // On a fresh root, a failure leaves nothing behind.
    let fresh = tmp.path().join("fresh");
    let failed = install(&fresh, "acme", &[("THOTH_INSTALLER_FAIL_AT", "config")]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(!fresh.join("usr/local/bin/thoth").exists());
    assert!(!fresh.join("etc/thoth/enrollment-token").exists());
}

#[test]
fn uninstall_restores_every_users_config_byte_for_byte_and_removes_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    install(&prefix, "acme", &[]);
    let cfg = prefix.join("home/ann/.config/Claude/claude_desktop_config.json");
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    let original = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"x\"]}\n  }\n}\n";
    std::fs::write(&cfg, original).unwrap();
    // Wrapped, as the agent would.
    let w = Command::new(prefix.join("usr/local/bin/thoth"))
        .args(["wrap-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", text(&w));
    assert_ne!(std::fs::read_to_string(&cfg).unwrap(), original);
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (v["configs"].as_u64(), v["governedConfigs"].as_u64()),
        (Some(1), Some(1))
    );
    let out = run(&["uninstall", "--prefix", prefix.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "the config is not restored"
    );
    for rel in [
        "usr/local/bin/thoth",
        "usr/local/bin/thoth-agent",
        "etc/thoth",
        "var/lib/thoth",
        "etc/systemd/system/thoth-agent.service",
    ] {
        assert!(!prefix.join(rel).exists(), "{rel} left behind");
    }
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    assert_eq!(st.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["installed"], false);
    assert_eq!(v["service"], "not installed");
}

#[test]
fn bad_arguments_are_refused_with_exit_2_and_managed_settings_fill_in() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let p = prefix.to_str().unwrap();
    let out = run(
        &[
            "install",
            "--controller",
            "https://x:1",
            "--ca-fingerprint",
            FP,
            "--root-key",
            ROOT_KEY,
            "--no-start",
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--tenant is required"),
        "{}",
        text(&out)
    );
    let out = run(
        &[
            "install",
            "--controller",
            "https://x:1",
            "--tenant",
            "acme",
            "--ca-fingerprint",
            "sha256:zz",
            "--root-key",
            ROOT_KEY,
            "--no-start",
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("ca_fingerprint"), "{}", text(&out));
    let out = run(
        &[
            "install",
            "--controller",
            "http://x:1",
            "--tenant",
            "acme",
            "--ca-fingerprint",
            FP,
            "--root-key",
            ROOT_KEY,
            "--no-start",
            "--prefix",
            p,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    // Managed settings (what an MDM profile writes) supply what flags do not; flags win.
    std::fs::create_dir_all(prefix.join("etc/thoth")).unwrap();
    std::fs::write(
        prefix.join("etc/thoth/managed.toml"),
        format!("controller = \"https://127.0.0.1:1\"\ntenant = \"managed-tenant\"\nca_fingerprint = \"{FP}\"\nroot_key = \"{ROOT_KEY}\"\n"),
    )
    .unwrap();
    let out = run(
        &[
            "install",
            "--tenant",
            "flag-tenant",
            "--no-start",
            "--prefix",
            p,
            "--from",
            bins().to_str().unwrap(),
        ],
        &[("THOTH_ENROLL_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("s3cr3t"));
    let cfg = std::fs::read_to_string(prefix.join("etc/thoth/agent.toml")).unwrap();
    assert!(
        cfg.contains("tenant = \"flag-tenant\"") && cfg.contains("https://127.0.0.1:1"),
        "{cfg}"
    );
}
