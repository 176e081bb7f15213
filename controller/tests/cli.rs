//! The real binaries, as the README uses them: `thoth-controller serve` alone, then `thothctl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_thoth-controller");

/// `thothctl` (crate thothctl), built next to `thoth-controller`.
fn thothctl() -> PathBuf {
    let p =
        Path::new(CONTROLLER).with_file_name(format!("thothctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/examples")
}

struct Served {
    child: Child,
    home: tempfile::TempDir,
}

impl Served {
    /// `thoth-controller serve` with nothing but a fresh HOME (so the default data directory).
    fn start() -> Served {
        let home = tempfile::tempdir().unwrap();
        let child = Command::new(CONTROLLER)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "off",
            ])
            .env("HOME", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("THOTH_CONTROLLER_DATA")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let served = Served { child, home };
        let url = served.data().join("admin/controller.url");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !url.exists() {
            assert!(Instant::now() < deadline, "controller did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn data(&self) -> PathBuf {
        self.home.path().join(".local/share/thoth-controller")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_env(args, &[])
    }

    fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(thothctl());
        cmd.args(args)
            .env("HOME", self.home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("THOTH_CONTROLLER_DATA")
            .env_remove("THOTHCTL_CREDENTIALS")
            .env_remove("THOTH_CONTROLLER")
            .env_remove("THOTH_TENANT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Served {
    /// `thothctl [--credentials DIR] ARGS`: (exit code, stdout and stderr).
    fn ctl_as(&self, creds: Option<&Path>, args: &[&str]) -> (i32, String) {
        let mut all: Vec<&str> = Vec::new();
        let dir;
        if let Some(c) = creds {
            dir = c.display().to_string();
            all.extend(["--credentials", dir.as_str()]);
        }
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", text(&out.stdout), text(&out.stderr)),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn serve_alone_then_thothctl_pushes_and_shows_history() {
    let s = Served::start();
    let file = examples().join("read-only-files.yaml");
    let out = s.ctl(&[
        "policy",
        "push",
        file.to_str().unwrap(),
        "--comment",
        "first",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("as version 1 of tenant default"),
        "{}",
        text(&out.stdout)
    );

    let out = s.ctl(&["policy", "history", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["version"], 1);
    assert_eq!(h[0]["comment"], "first");
    let doc = std::fs::read(&file).unwrap();
    assert_eq!(
        h[0]["sha256"].as_str().unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&doc))
    );
    let table = text(&s.ctl(&["policy", "history"]).stdout);
    assert!(table.starts_with("VERSION"), "{table}");

    let out = s.ctl(&["policy", "show"]);
    assert_eq!(out.stdout, doc);
    let other = examples().join("read-write-files.yaml");
    assert!(
        s.ctl(&["policy", "push", other.to_str().unwrap()])
            .status
            .success()
    );
    let diff = text(&s.ctl(&["policy", "diff", "1"]).stdout);
    assert!(
        diff.contains("--- version 1") && diff.contains("+++ version 2"),
        "{diff}"
    );
    let out = s.ctl(&["policy", "rollback", "1"]);
    assert!(
        text(&out.stdout).contains("as version 3"),
        "{}",
        text(&out.stdout)
    );

    let out = s.ctl(&[
        "token", "create", "--uses", "5", "--label", "team=it", "--json",
    ]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t["token"].as_str().unwrap().starts_with("tok-"));
    assert_eq!(t["labels"]["team"], "it");
    let agents = text(&s.ctl(&["agents", "list"]).stdout);
    assert!(agents.contains("no agents enrolled yet"), "{agents}");
    let audit = text(&s.ctl(&["audit"]).stdout);
    assert!(
        audit.contains("policy.rollback") && audit.contains("token.create"),
        "{audit}"
    );
}

#[test]
fn thothctl_errors_say_what_went_wrong_with_distinct_exit_codes() {
    let s = Served::start();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "servers:\n  - name: files\n    enforcement: sometimes\n",
    )
    .unwrap();

    // A policy that does not validate: refused locally with file:line, exit 5, nothing pushed.
    let out = s.ctl(&["policy", "push", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        text(&out.stderr).contains("bad.yaml:3"),
        "{}",
        text(&out.stderr)
    );
    let out = s.ctl(&["policy", "validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    let h = text(&s.ctl(&["policy", "history"]).stdout);
    assert!(h.contains("no policy yet"), "{h}");

    // Unreachable controller: exit 3 and a hint.
    let out = s.ctl(&["--controller", "https://127.0.0.1:1", "whoami"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("is the controller running"),
        "{}",
        text(&out.stderr)
    );
    let out = s.ctl(&["--controller", "http://127.0.0.1:1", "whoami"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("https://"),
        "{}",
        text(&out.stderr)
    );

    // Credentials of another controller: the TLS check fails and says so.
    let other = tempfile::tempdir().unwrap();
    let init = Command::new(CONTROLLER)
        .args(["init", "--data"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let url = std::fs::read_to_string(s.data().join("admin/controller.url")).unwrap();
    let out = s.ctl(&[
        "--credentials",
        other.path().join("admin").to_str().unwrap(),
        "--controller",
        url.trim(),
        "whoami",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("certificate"),
        "{}",
        text(&out.stderr)
    );

    // No credential at all.
    let out = s.ctl(&["--credentials", dir.path().to_str().unwrap(), "whoami"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("no admin credential"),
        "{}",
        text(&out.stderr)
    );

    // A viewer pushing: refused, exit 4.
    let viewer = dir.path().join("viewer");
    let issued = Command::new(CONTROLLER)
        .args(["issue-admin", "--name", "vera", "--role", "viewer", "--out"])
        .arg(&viewer)
        .arg("--data")
        .arg(s.data())
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let good = examples().join("read-only-files.yaml");
    let out = s.ctl(&[
        "--credentials",
        viewer.to_str().unwrap(),
        "policy",
        "push",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    let me = text(
        &s.ctl(&["--credentials", viewer.to_str().unwrap(), "whoami"])
            .stdout,
    );
    assert!(me.contains("vera (role viewer"), "{me}");
}

#[test]
fn init_refuses_to_overwrite_and_serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let first = Command::new(CONTROLLER)
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(first.status.success());
    let out = text(&first.stdout);
    assert!(out.contains("CA fingerprint:      sha256:"), "{out}");
    let ca_before = std::fs::read(data.join("ca.crt")).unwrap();
    let again = Command::new(CONTROLLER)
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already initialized"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(data.join("ca.crt")).unwrap(), ca_before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key", "root.key", "admin/client.key"] {
            let mode = std::fs::metadata(data.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} is readable by others");
        }
    }
    // A config error is reported with the file and the setting.
    std::fs::write(data.join("controller.toml"), "bundle_validty = \"1d\"\n").unwrap();
    let bad = Command::new(CONTROLLER)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("bundle_validty"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::write(data.join("controller.toml"), "").unwrap();

    let mut child = Command::new(CONTROLLER)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = data.join("admin/controller.url");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !url.exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn issue_admin_records_and_thothctl_admins_revoke_refuses_the_next_call() {
    // `issue-admin` records what it issues; `thothctl admins revoke` refuses its next call.
    let s = Served::start();
    let bob = s.home.path().join("bob");
    let out = Command::new(CONTROLLER)
        .args(["issue-admin", "--data"])
        .arg(s.data())
        .args(["--name", "bob", "--role", "operator", "--out"])
        .arg(&bob)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, text) = s.ctl_as(Some(&bob), &["whoami"]);
    assert_eq!(code, 0, "{text}");

    let (code, text) = s.ctl_as(None, &["admins", "list"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("bob") && text.contains("issue-admin"),
        "{text}"
    );
    assert!(
        text.contains("admin") && text.contains("init") && text.contains("(you)"),
        "{text}"
    );
    // An operator cannot list or revoke admins.
    let (code, text) = s.ctl_as(Some(&bob), &["admins", "revoke", "admin"]);
    assert_eq!(code, 4, "{text}");

    let (code, text) = s.ctl_as(None, &["admins", "revoke", "bob", "--reason", "left"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("REVOKED") && text.contains("left"), "{text}");
    let (code, text) = s.ctl_as(Some(&bob), &["whoami"]);
    assert_ne!(code, 0, "a revoked admin's next call is refused: {text}");
    let (code, text) = s.ctl_as(None, &["whoami"]);
    assert_eq!(code, 0, "{text}");

    // Nothing stored yet: nothing to prove, nothing broken.
    let (code, text) = s.ctl_as(None, &["events", "verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: no events"), "{text}");
}
