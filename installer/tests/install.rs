//! The installer with `--prefix` (a temp root) and `--no-start`: layout and modes, idempotence,
//! rollback of a failure part-way, uninstall restoring users' configs, status, bad arguments.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

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
    assert_eq!(
        tree(&prefix),
        [
            "etc/",
            "etc/systemd/",
            "etc/systemd/system/",
            "etc/systemd/system/thoth-agent.service",
            "etc/thoth/",
            "etc/thoth/agent.toml",
            "etc/thoth/enrollment-token",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/thoth",
            "usr/local/bin/thoth-agent",
            "usr/local/bin/thoth-installer",
            "var/",
            "var/lib/",
            "var/lib/thoth/",
            "var/lib/thoth/install.json",
        ],
        "exactly the expected tree"
    );
    for (rel, m) in [
        ("usr/local/bin/thoth", 0o755),
        ("usr/local/bin/thoth-agent", 0o755),
        ("usr/local/bin/thoth-installer", 0o755),
        ("etc/thoth/enrollment-token", 0o600),
        ("etc/thoth/agent.toml", 0o644),
        ("etc/systemd/system/thoth-agent.service", 0o644),
        // Proxies open the trust file and last-known-good policy in it by name; nobody lists
        // it or reads the spool and status the agent keeps there.
        ("var/lib/thoth", 0o711),
        ("var/lib/thoth/install.json", 0o644),
    ] {
        assert_eq!(mode(&prefix.join(rel)), m, "{rel}");
    }
    // The installed binaries are the built ones.
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        assert_eq!(
            std::fs::read(prefix.join("usr/local/bin").join(b)).unwrap(),
            std::fs::read(bins().join(b)).unwrap(),
            "{b}"
        );
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
        "NoNewPrivileges=yes".to_owned(),
        "ProtectSystem=full".to_owned(),
        "Restart=always".to_owned(),
        format!(
            "ExecStart={}/usr/local/bin/thoth-agent run --config {}/etc/thoth/agent.toml",
            prefix.display(),
            prefix.display()
        ),
    ] {
        assert!(unit.contains(key.as_str()), "{key} missing from the unit");
    }
    // systemd's own checker accepts the unit (it also checks that ExecStart's binary exists).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(prefix.join("etc/systemd/system/thoth-agent.service"))
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", text(&v));
        assert_eq!(text(&v).trim(), "", "systemd-analyze verify complained");
    } else {
        eprintln!("systemd-analyze is not installed: the unit was checked for its keys only");
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

/// One file per MCP client under `home`, each in its own odd layout (comments, CRLF, a BOM,
/// escapes, literal strings), with a local server and (where the client has them) a remote one.
fn client_files(home: &Path) -> Vec<(&'static str, std::path::PathBuf, String)> {
    let files = vec![
        (
            "claude-desktop",
            home.join(".config/Claude/claude_desktop_config.json"),
            "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"x\"]},\n    \"remote\": {\"url\": \"https://mcp.example.com\"}\n  }\n}\n".to_owned(),
        ),
        (
            "cursor",
            home.join(".cursor/mcp.json"),
            "\u{feff}{\r\n  \"mcpServers\": {\r\n    \"git\": {\r\n      \"command\": \"uvx\",\r\n      \"args\": [\"mcp-server-git\"]\r\n    }\r\n  }\r\n}\r\n".to_owned(),
        ),
        (
            "vscode",
            home.join(".config/Code/User/mcp.json"),
            "{\n  // my servers\n  \"servers\": {\n    \"db\": {\n      \"type\": \"stdio\",\n      \"command\": \"\\u006e\\u0070\\u0078\", /* escaped */\n      \"args\": [\"pg-mcp\",],\n    },\n    \"gh\": {\"type\": \"http\", \"url\": \"https://api.example.com/mcp\"},\n  },\n}\n".to_owned(),
        ),
        (
            "windsurf",
            home.join(".codeium/windsurf/mcp_config.json"),
            "{\"mcpServers\": {\"mem\": {\"command\": \"/opt/mem-mcp\"}, \"r\": {\"serverUrl\": \"https://x.example\"}}}".to_owned(),
        ),
        (
            "claude-code",
            home.join(".claude.json"),
            "{\n  \"numStartups\": 12,\n  \"mcpServers\": {\"fs\": {\"type\": \"stdio\", \"command\": \"npx\", \"args\": [\"fs\"], \"env\": {}}},\n  \"projects\": {\n    \"/work/app\": {\"mcpServers\": {\"app\": {\"command\": \"node\", \"args\": [\"srv.js\"]}}, \"allowedTools\": []}\n  }\n}\n".to_owned(),
        ),
        (
            "codex",
            home.join(".codex/config.toml"),
            "model = \"o4\"\n\n# tools\n[mcp_servers.docs]\ncommand = 'C:\\tools\\docs.exe'\nargs = [\n  \"--root\", # where\n  'D:\\docs',\n]\n\n[mcp_servers.remote]\nurl = \"https://mcp.example.org\"\n".to_owned(),
        ),
    ];
    for (_, path, text) in &files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    files
}

#[test]
fn uninstall_restores_every_users_config_byte_for_byte_and_removes_the_files() {
    use thoth_hosts::format::Op;
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    install(&prefix, "acme", &[]);
    let homes = [prefix.join("home/ann"), prefix.join("home/bob")];
    let files: Vec<_> = homes.iter().flat_map(|h| client_files(h)).collect();
    // Wrapped exactly as this installation's agent would: its thoth binary, socket and state
    // dir (anything else is drift, and not counted as governed).
    let thoth = std::fs::canonicalize(prefix.join("usr/local/bin/thoth")).unwrap();
    let extra = thoth_hosts::wrapper::canonical_extra(
        &prefix.join("run/thoth/agent.sock"),
        &prefix.join("var/lib/thoth"),
    );
    let op = Op::wrap_strict(thoth.display().to_string(), extra);
    let mut local = 0;
    for (client, path, original) in &files {
        let host = thoth_hosts::host::by_id(client).unwrap();
        let out = thoth_hosts::file::rewrite_file(host, path, &op, false)
            .unwrap_or_else(|e| panic!("{client}: {e}"));
        assert!(out.written, "{client}: nothing wrapped");
        local += out.report.wrapped.len();
        assert_ne!(&std::fs::read_to_string(path).unwrap(), original);
    }
    assert_eq!(local, 2 * 7, "every local server of every client wrapped");
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["configs"].as_u64(), Some(files.len() as u64), "{v}");
    assert_eq!(
        (v["servers"].as_u64(), v["governedServers"].as_u64()),
        (Some(local as u64), Some(local as u64)),
        "{v}"
    );
    assert_eq!(v["remoteServers"].as_u64(), Some(2 * 4), "{v}");
    assert_eq!(
        v["governedConfigs"].as_u64(),
        Some(files.len() as u64),
        "{v}"
    );
    // One wrapper altered by hand: no longer counted as governed.
    let (_, cursor, _) = &files[1];
    let altered = std::fs::read_to_string(cursor).unwrap().replacen(
        "\"--client\"",
        "\"--policy\", \"/tmp/p\", \"--client\"",
        1,
    );
    std::fs::write(cursor, &altered).unwrap();
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["governedServers"].as_u64(), Some(local as u64 - 1), "{v}");
    let out = run(&["uninstall", "--prefix", prefix.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    for (client, path, original) in &files {
        // The hand-altered wrapper too: unwrapped around the command after `--`.
        let now = std::fs::read_to_string(path).unwrap();
        assert_eq!(&now, original, "{client}: {} not restored", path.display());
    }
    assert_absent(
        &prefix,
        &[
            "usr/local/bin/thoth",
            "usr/local/bin/thoth-agent",
            "etc/thoth",
            "var/lib/thoth",
            "etc/systemd/system/thoth-agent.service",
        ],
    );
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

#[test]
fn install_again_without_settings_repairs_in_place_and_keeps_the_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let p = prefix.to_str().unwrap();
    install(&prefix, "acme", &[]);
    let cfg = std::fs::read_to_string(prefix.join("etc/thoth/agent.toml")).unwrap();
    // Damage: a binary deleted, the token made world-readable, the unit edited.
    std::fs::remove_file(prefix.join("usr/local/bin/thoth")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        prefix.join("etc/thoth/enrollment-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(
        prefix.join("etc/systemd/system/thoth-agent.service"),
        "[Service]\nExecStart=/bin/false\n",
    )
    .unwrap();
    // A file an earlier version installed that this one does not: removed by the upgrade.
    let stale = prefix.join("usr/local/share/doc/thoth/uninstall.sh");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, "old").unwrap();
    let mpath = prefix.join("var/lib/thoth/install.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    m["files"]
        .as_array_mut()
        .unwrap()
        .push(stale.display().to_string().into());
    std::fs::write(&mpath, m.to_string()).unwrap();
    let from = bins();
    let args = [
        "install",
        "--no-start",
        "--prefix",
        p,
        "--from",
        from.to_str().unwrap(),
    ];
    let out = run(&args, &[]);
    assert!(!stale.exists(), "the stale file is gone: {}", text(&out));
    assert_eq!(out.status.code(), Some(3), "repaired: {}", text(&out));
    assert!(prefix.join("usr/local/bin/thoth").exists());
    assert_eq!(mode(&prefix.join("etc/thoth/enrollment-token")), 0o600);
    assert!(
        std::fs::read_to_string(prefix.join("etc/systemd/system/thoth-agent.service"))
            .unwrap()
            .contains("thoth-agent run --config")
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("etc/thoth/agent.toml")).unwrap(),
        cfg,
        "the settings were kept"
    );
    let out = run(&args, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    // A flag still wins over the installed settings.
    let out = run(&[&args[..], &["--tenant", "globex"]].concat(), &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        std::fs::read_to_string(prefix.join("etc/thoth/agent.toml"))
            .unwrap()
            .contains("tenant = \"globex\"")
    );
}

#[test]
fn another_platforms_layout_needs_a_prefix_and_unknown_managed_settings_are_named() {
    let other = if cfg!(target_os = "macos") {
        "linux"
    } else {
        "macos"
    };
    let out = run(&["install", "--platform", other, "--tenant", "x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("give --prefix"), "{}", text(&out));
    let out = run(&["status", "--platform", "beos"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses it: {}",
        text(&out)
    );
    // A typo in managed.toml is refused with the file and the key, and nothing is written.
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    std::fs::create_dir_all(prefix.join("etc/thoth")).unwrap();
    std::fs::write(
        prefix.join("etc/thoth/managed.toml"),
        "tenantt = \"acme\"\n",
    )
    .unwrap();
    let out = run(
        &[
            "install",
            "--no-start",
            "--prefix",
            prefix.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("managed.toml") && text(&out).contains("tenantt"),
        "{}",
        text(&out)
    );
    assert!(!prefix.join("usr").exists());
}

#[test]
fn a_strict_umask_still_leaves_directories_readable_and_an_image_holds_its_own_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    let token = tmp.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    // As from an MDM script that set umask 077.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 077; exec {} install --controller https://127.0.0.1:1 --tenant acme --enroll-token-file {} --ca-fingerprint {FP} --root-key {ROOT_KEY} --no-start --image --prefix {} --from {}",
            installer().display(),
            token.display(),
            prefix.display(),
            bins().display()
        ))
        .env_remove("THOTH_INSTALLER_PLATFORM")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    for d in [
        "etc",
        "etc/thoth",
        "var/lib",
        "usr/local/bin",
        "etc/systemd/system",
    ] {
        assert_eq!(mode(&prefix.join(d)), 0o755, "{d}");
    }
    assert_eq!(mode(&prefix.join("var/lib/thoth")), 0o711);
    assert_eq!(mode(&prefix.join("etc/thoth/enrollment-token")), 0o600);
    assert_eq!(mode(&prefix.join("etc/thoth/agent.toml")), 0o644);
    // --image: the files name the image's own paths, not the prefix.
    let cfg = std::fs::read_to_string(prefix.join("etc/thoth/agent.toml")).unwrap();
    assert!(!cfg.contains(prefix.to_str().unwrap()), "{cfg}");
    assert!(cfg.contains("state_dir = \"/var/lib/thoth\""), "{cfg}");
    assert!(
        cfg.contains("thoth_path = \"/usr/local/bin/thoth\""),
        "{cfg}"
    );
    let unit =
        std::fs::read_to_string(prefix.join("etc/systemd/system/thoth-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/thoth-agent run --config /etc/thoth/agent.toml"),
        "{unit}"
    );
    // The manifest records the image's own paths too.
    let manifest = std::fs::read_to_string(prefix.join("var/lib/thoth/install.json")).unwrap();
    assert!(
        manifest.contains("\"/usr/local/bin/thoth-agent\""),
        "{manifest}"
    );
    assert!(!manifest.contains(prefix.to_str().unwrap()), "{manifest}");
    // A later repair puts a directory's mode back.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        prefix.join("etc/thoth"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let again = run(
        &[
            "install",
            "--no-start",
            "--image",
            "--prefix",
            prefix.to_str().unwrap(),
            "--from",
            bins().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(again.status.code(), Some(5), "{}", text(&again));
    assert_eq!(mode(&prefix.join("etc/thoth")), 0o755);
    // Uninstall still finds and removes what it wrote under the prefix.
    let out = run(&["uninstall", "--prefix", prefix.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!prefix.join("usr/local/bin/thoth").exists());
    assert!(
        !prefix
            .join("etc/systemd/system/thoth-agent.service")
            .exists()
    );
}

#[test]
fn a_manifest_that_cannot_be_written_rolls_the_whole_install_back() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("root");
    // Something in the way of install.json.
    std::fs::create_dir_all(prefix.join("var/lib/thoth/install.json")).unwrap();
    let out = install(&prefix, "acme", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("put back"), "{}", text(&out));
    assert_absent(
        &prefix,
        &[
            "usr/local/bin/thoth",
            "usr/local/bin/thoth-agent",
            "etc/thoth/agent.toml",
            "etc/thoth/enrollment-token",
            "etc/systemd/system/thoth-agent.service",
        ],
    );
    let st = run(
        &["status", "--json", "--prefix", prefix.to_str().unwrap()],
        &[],
    );
    assert_eq!(st.status.code(), Some(1));
}
