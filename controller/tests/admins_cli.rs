//! The real binaries: `thoth-controller issue-admin` records what it issues, `thothctl admins
//! list|revoke` revoke it (the next call is refused), and `thothctl events verify` answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_thoth-controller");
const THOTHCTL: &str = env!("CARGO_BIN_EXE_thothctl");

struct Served {
    child: Child,
    home: tempfile::TempDir,
}

impl Served {
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

    fn ctl(&self, creds: Option<&Path>, args: &[&str]) -> (i32, String) {
        let mut cmd = Command::new(THOTHCTL);
        if let Some(c) = creds {
            cmd.arg("--credentials").arg(c);
        }
        let out: Output = cmd
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("THOTH_CONTROLLER_DATA")
            .env_remove("THOTHCTL_CREDENTIALS")
            .env_remove("THOTH_CONTROLLER")
            .env_remove("THOTH_TENANT")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn issue_admin_records_and_thothctl_admins_revoke_refuses_the_next_call() {
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
    let (code, text) = s.ctl(Some(&bob), &["whoami"]);
    assert_eq!(code, 0, "{text}");

    let (code, text) = s.ctl(None, &["admins", "list"]);
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
    let (code, text) = s.ctl(Some(&bob), &["admins", "revoke", "admin"]);
    assert_eq!(code, 4, "{text}");

    let (code, text) = s.ctl(None, &["admins", "revoke", "bob", "--reason", "left"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("REVOKED") && text.contains("left"), "{text}");
    let (code, text) = s.ctl(Some(&bob), &["whoami"]);
    assert_ne!(code, 0, "a revoked admin's next call is refused: {text}");
    let (code, text) = s.ctl(None, &["whoami"]);
    assert_eq!(code, 0, "{text}");

    // Nothing stored yet: nothing to prove, nothing broken.
    let (code, text) = s.ctl(None, &["events", "verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: no events"), "{text}");
}
