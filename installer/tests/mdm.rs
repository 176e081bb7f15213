//! The MDM examples in packaging/mdm, run as the MDM would run them, against the real installer
//! on a temp root: Jamf's policy script and extension attribute, Kandji's audit and
//! post-install scripts; Intune's PowerShell cannot run here, so its use of the installer's
//! flags and status fields is checked against the real ones.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output};

use common::*;

fn script(rel: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = repo().join("packaging/mdm").join(rel);
    let mut c = Command::new("bash");
    c.arg(&path)
        .args(args)
        .env("THOTH_INSTALLER", installer())
        .env_remove("THOTH_ENROLL_TOKEN")
        .env_remove("THOTH_INSTALLER_PLATFORM");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_mdm_shell_script_parses() {
    for dir in [
        "packaging/mdm/jamf",
        "packaging/mdm/kandji",
        "packaging/macos",
        "packaging/macos/scripts",
        "packaging/deb",
    ] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            let head = std::fs::read_to_string(&p).unwrap_or_default();
            if !head.starts_with("#!") {
                continue;
            }
            let shell = if head.starts_with("#!/bin/sh") {
                "sh"
            } else {
                "bash"
            };
            let o = Command::new(shell).arg("-n").arg(&p).output().unwrap();
            assert!(o.status.success(), "{}: {}", p.display(), text(&o));
        }
    }
}

#[test]
fn jamf_policy_script_installs_without_exposing_the_token_and_the_extension_attribute_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let extra = format!(
        "--prefix {} --no-start --from {}",
        root.display(),
        bins().display()
    );
    // Before install; and an installer that fails says so rather than "not installed".
    let status_only = format!("--prefix {}", root.display());
    let ea = script(
        "jamf/extension-attribute.sh",
        &[],
        &[("THOTH_INSTALLER_EXTRA", &status_only)],
    );
    assert_eq!(
        String::from_utf8_lossy(&ea.stdout).trim(),
        "<result>not installed</result>"
    );
    let ea = script(
        "jamf/extension-attribute.sh",
        &[],
        &[("THOTH_INSTALLER_EXTRA", "--platform beos")],
    );
    assert!(
        String::from_utf8_lossy(&ea.stdout).starts_with("<result>error: "),
        "{}",
        text(&ea)
    );
    // Jamf passes $1-$3 itself, then the policy's parameters 4-9.
    let out = script(
        "jamf/install-thoth.sh",
        &[
            "/",
            "mac-042",
            "ann",
            "https://127.0.0.1:1",
            "acme",
            TOKEN,
            FP,
            ROOT_KEY,
            "managed-by=jamf,floor=3",
        ],
        &[
            ("THOTH_INSTALLER_EXTRA", &extra),
            ("TMPDIR", scratch.to_str().unwrap()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit 3 is success for Jamf: {}",
        text(&out)
    );
    assert!(text(&out).contains("not reachable yet"), "{}", text(&out));
    assert!(
        !text(&out).contains("s3cr3t"),
        "the token is in the policy log"
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the temp token file was removed"
    );
    let cfg: toml::Table = std::fs::read_to_string(root.join("etc/thoth/agent.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cfg["labels"]["managed-by"].as_str(), Some("jamf"));
    assert_eq!(cfg["labels"]["floor"].as_str(), Some("3"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/thoth/enrollment-token"))
            .unwrap()
            .trim(),
        TOKEN
    );
    let status_extra = format!("--prefix {}", root.display());
    let ea = script(
        "jamf/extension-attribute.sh",
        &[],
        &[("THOTH_INSTALLER_EXTRA", &status_extra)],
    );
    assert_eq!(
        String::from_utf8_lossy(&ea.stdout).trim(),
        format!(
            "<result>thoth {} stopped, not enrolled, no policy, 0/0 MCP servers governed, 0 remote, in 0 files of 0 clients</result>",
            env!("CARGO_PKG_VERSION")
        )
    );
    // A missing setting fails the policy with the installer's message.
    let bad = script(
        "jamf/install-thoth.sh",
        &["/", "m", "u", "https://127.0.0.1:1", "", "", FP, ROOT_KEY],
        &[(
            "THOTH_INSTALLER_EXTRA",
            &format!("--prefix {} --no-start", tmp.path().join("other").display()),
        )],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("--tenant is required"),
        "{}",
        text(&bad)
    );
}

#[test]
fn kandji_audit_asks_for_a_reinstall_until_the_agent_runs_and_postinstall_uses_managed_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let extra = format!(
        "--prefix {} --no-start --from {}",
        root.display(),
        bins().display()
    );
    let status_extra = format!("--prefix {}", root.display());
    let audit = |env: &[(&str, &str)]| {
        let mut e = vec![("THOTH_INSTALLER_EXTRA", status_extra.as_str())];
        e.extend_from_slice(env);
        script("kandji/audit-and-enforce.sh", &[], &e)
    };
    let a = audit(&[]);
    assert_eq!(a.status.code(), Some(1), "not installed: {}", text(&a));
    // Post-install with the settings the Custom Profile provides (Linux: managed.toml).
    let missing = script(
        "kandji/postinstall.sh",
        &[],
        &[("THOTH_INSTALLER_EXTRA", &extra)],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("Custom Profile"),
        "{}",
        text(&missing)
    );
    std::fs::create_dir_all(root.join("etc/thoth")).unwrap();
    std::fs::write(
        root.join("etc/thoth/managed.toml"),
        format!("controller = \"https://127.0.0.1:1\"\ntenant = \"acme\"\nca_fingerprint = \"{FP}\"\nroot_key = \"{ROOT_KEY}\"\nenroll_token = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let post = script(
        "kandji/postinstall.sh",
        &[],
        &[("THOTH_INSTALLER_EXTRA", &extra)],
    );
    assert_eq!(post.status.code(), Some(0), "{}", text(&post));
    assert!(text(&post).contains("enrolls later"), "{}", text(&post));
    // Installed but the agent is not running: not compliant.
    let a = audit(&[]);
    assert_eq!(a.status.code(), Some(1), "{}", text(&a));
    assert!(text(&a).contains("not running"), "{}", text(&a));
    // The installed agent, started as the service would start it: compliant.
    let agent = Command::new(root.join("usr/local/bin/thoth-agent"))
        .args(["run", "--config"])
        .arg(root.join("etc/thoth/agent.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Kill(agent);
    let socket = root.join("run/thoth/agent.sock");
    let t0 = std::time::Instant::now();
    while !Path::new(&socket).exists() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut a = audit(&[]);
    while a.status.code() != Some(0) && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        a = audit(&[]);
    }
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert!(text(&a).contains("running, not enrolled"), "{}", text(&a));
    // A minimum version above this one asks for a reinstall.
    let a = audit(&[("THOTH_MIN_VERSION", "99.0.0")]);
    assert_eq!(a.status.code(), Some(1));
    assert!(text(&a).contains("older than 99.0.0"), "{}", text(&a));
}

#[test]
fn intune_scripts_use_only_flags_and_status_fields_the_installer_has() {
    let dir = repo().join("packaging/mdm/intune");
    let help = text(&run(&["install", "--help"], &[]));
    let install = std::fs::read_to_string(dir.join("install.ps1")).unwrap();
    for key in [
        "controller",
        "tenant",
        "ca_fingerprint",
        "root_key",
        "labels",
    ] {
        assert!(
            install.contains(&format!("# {key} ")),
            "install.ps1 documents {key}"
        );
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(help.contains(&flag), "{flag} is not an installer flag");
    }
    assert!(help.contains("--enroll-token-file") && install.contains("'--enroll-token-file'"));
    // detect.ps1 reads $status.<field>: each must be in `status --json`.
    let tmp = tempfile::tempdir().unwrap();
    let st = run(
        &["status", "--json", "--prefix", tmp.path().to_str().unwrap()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let detect = std::fs::read_to_string(dir.join("detect.ps1")).unwrap();
    let mut fields = 0;
    for part in detect.split("$status.").skip(1) {
        let field: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            v.get(&field).is_some(),
            "detect.ps1 reads {field}, not in status --json: {v}"
        );
        fields += 1;
    }
    assert!(fields >= 4, "{fields}");
    assert!(detect.contains("status --json"));
    let uninstall = std::fs::read_to_string(dir.join("uninstall.ps1")).unwrap();
    assert!(uninstall.contains("& $installer uninstall"));
    // The MSI's product name is what uninstall.ps1 looks for.
    let wxs = std::fs::read_to_string(repo().join("packaging/msi/thoth.wxs")).unwrap();
    assert!(wxs.contains("Name=\"Thoth agent\"") && uninstall.contains("'Thoth agent'"));
}
