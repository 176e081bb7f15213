//! The packages: the .deb through its whole life in a throw-away root (dpkg --root, maintainer
//! scripts run), the .rpm's contents, scripts and upgrade, the .msi's files and service, and the
//! macOS .pkg's payload and scripts. Needs the apt peers `scripts/setup-peers` installs (rpm,
//! wixl, msitools) and builds release binaries.

#[path = "../../installer/tests/common/mod.rs"]
mod installer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use installer::*;

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a packaging build script; returns the path it printed last.
fn build(script: &str, args: &[&Path], env: &[(&str, &str)]) -> PathBuf {
    let mut c = Command::new(repo().join(script));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = sh(&mut c);
    PathBuf::from(stdout(&out).lines().last().unwrap().trim())
}

const ORIGINAL: &str = "{\n  \"mcpServers\": {\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/tmp\"]}\n  },\n  \"globalShortcut\": \"Ctrl+Space\"\n}\n";

#[test]
fn the_deb_installs_upgrades_removes_and_purges_in_a_throw_away_root() {
    let out = tempfile::tempdir().unwrap();
    let deb = build("packaging/deb/build", &[out.path()], &[]);
    let info = stdout(&sh(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    assert!(info.contains("Package: thoth"), "{info}");
    let list = stdout(&sh(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        let line = list
            .lines()
            .find(|l| l.ends_with(&format!("./usr/local/bin/{b}")))
            .unwrap_or_else(|| panic!("{b} missing: {list}"));
        assert!(line.starts_with("-rwxr-xr-x root/root"), "{line}");
    }

    // A throw-away root with a dpkg database, the MDM's settings and a user's Claude config.
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc/thoth"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(
        r.join("etc/thoth/managed.toml"),
        format!("controller = \"https://127.0.0.1:1\"\ntenant = \"acme\"\nca_fingerprint = \"{FP}\"\nroot_key = \"{ROOT_KEY}\"\nenroll_token = \"{TOKEN}\"\n"),
    )
    .unwrap();
    let user_cfg = r.join("home/ann/.config/Claude/claude_desktop_config.json");
    std::fs::create_dir_all(user_cfg.parent().unwrap()).unwrap();
    std::fs::write(&user_cfg, ORIGINAL).unwrap();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-not-root"])
            .args(args);
        sh(&mut c)
    };
    let deb_s = deb.to_str().unwrap();

    // Install: postinst runs the installer with the managed settings.
    let o = dpkg(&["-i", deb_s]);
    assert!(!text(&o).contains("s3cr3t"), "the token was printed");
    assert!(r.join("etc/systemd/system/thoth-agent.service").exists());
    assert!(r.join("var/lib/thoth/install.json").exists());
    assert_eq!(mode(&r.join("etc/thoth/enrollment-token")), 0o600);
    let cfg = std::fs::read_to_string(r.join("etc/thoth/agent.toml")).unwrap();
    assert!(cfg.contains("tenant = \"acme\""), "{cfg}");
    // The agent would wrap the user's config and enroll; do both by hand.
    sh(Command::new(r.join("usr/local/bin/thoth"))
        .arg("wrap-config")
        .arg(&user_cfg));
    let wrapped = std::fs::read_to_string(&user_cfg).unwrap();
    assert_ne!(wrapped, ORIGINAL);
    std::fs::create_dir_all(r.join("var/lib/thoth/identity")).unwrap();
    std::fs::write(
        r.join("var/lib/thoth/identity/agent.json"),
        "{\"agentId\":\"a1\"}",
    )
    .unwrap();

    // Upgrade (the same package again: prerm upgrade, then postinst configure): nothing changes.
    let o = dpkg(&["-i", deb_s]);
    assert!(text(&o).contains("nothing changed"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/thoth/agent.toml")).unwrap(),
        cfg
    );
    assert!(r.join("var/lib/thoth/identity/agent.json").exists());
    assert_eq!(std::fs::read_to_string(&user_cfg).unwrap(), wrapped);

    // Remove: prerm unwraps every user's config; settings and identity stay for a reinstall.
    dpkg(&["-r", "thoth"]);
    assert_eq!(std::fs::read_to_string(&user_cfg).unwrap(), ORIGINAL);
    assert!(!r.join("usr/local/bin/thoth-agent").exists());
    assert!(!r.join("etc/systemd/system/thoth-agent.service").exists());
    assert!(r.join("etc/thoth/agent.toml").exists());
    assert!(r.join("var/lib/thoth/identity/agent.json").exists());

    // Purge: everything of ours is gone.
    dpkg(&["-P", "thoth"]);
    assert!(!r.join("etc/thoth").exists());
    assert!(!r.join("var/lib/thoth").exists());
    assert_eq!(std::fs::read_to_string(&user_cfg).unwrap(), ORIGINAL);
}

#[test]
fn the_rpm_holds_the_binaries_calls_the_installer_and_an_upgrade_keeps_the_settings() {
    let out = tempfile::tempdir().unwrap();
    let rpm1 = build("packaging/rpm/build", &[out.path()], &[]);
    let q = |args: &[&str], pkg: &Path| stdout(&sh(Command::new("rpm").args(args).arg(pkg)));
    let list = q(&["-qlvp"], &rpm1);
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        let line = list
            .lines()
            .find(|l| l.ends_with(&format!(" /usr/local/bin/{b}")))
            .unwrap_or_else(|| panic!("{b} missing: {list}"));
        assert!(
            line.starts_with("-rwxr-xr-x") && line.contains("root     root"),
            "{line}"
        );
    }
    assert_eq!(
        list.lines().count(),
        4,
        "only the binaries and the example: {list}"
    );
    let scripts = q(&["-qp", "--scripts"], &rpm1);
    assert!(
        scripts.contains("postinstall scriptlet")
            && scripts.contains("thoth-installer install --from /usr/local/bin"),
        "{scripts}"
    );
    assert!(
        scripts.contains("preuninstall scriptlet")
            && scripts.contains("[ \"$1\" -eq 0 ]")
            && scripts.contains("thoth-installer uninstall"),
        "only an erase uninstalls: {scripts}"
    );
    // Install into a throw-away root, then upgrade to release 2: settings written by the
    // installer (not owned by the package) are kept.
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path().join("root");
    std::fs::create_dir_all(r.join("etc/thoth")).unwrap();
    let dbpath = r.join("var/lib/rpm");
    let rpm = |args: &[&str], pkg: Option<&Path>| {
        let mut c = Command::new("rpm");
        c.arg("--root")
            .arg(&r)
            .arg("--dbpath")
            .arg(&dbpath)
            .args(args);
        if args[0] != "-q" {
            c.args(["--nodeps", "--noscripts"]);
        }
        if let Some(p) = pkg {
            c.arg(p);
        }
        sh(&mut c)
    };
    sh(Command::new("rpm")
        .arg("--root")
        .arg(&r)
        .arg("--dbpath")
        .arg(&dbpath)
        .arg("--initdb"));
    rpm(&["-i"], Some(&rpm1));
    let agent_toml = r.join("etc/thoth/agent.toml");
    std::fs::write(&agent_toml, "tenant = \"acme\"\n").unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let rpm2 = build(
        "packaging/rpm/build",
        &[out2.path()],
        &[("THOTH_RPM_RELEASE", "2")],
    );
    rpm(&["-U"], Some(&rpm2));
    let q = stdout(&rpm(&["-q", "thoth"], None));
    assert!(q.trim().ends_with("-2.x86_64") || q.contains("-2."), "{q}");
    assert_eq!(
        std::fs::read_to_string(&agent_toml).unwrap(),
        "tenant = \"acme\"\n"
    );
    assert!(r.join("usr/local/bin/thoth-agent").exists());
    rpm(&["-e", "thoth"], None);
    assert!(!r.join("usr/local/bin/thoth-agent").exists());
}

#[test]
fn the_msi_installs_the_three_programs_and_declares_the_agent_service() {
    let tmp = tempfile::tempdir().unwrap();
    // Windows binaries cannot be built on this machine: the MSI packages whatever it is given,
    // so distinct stand-in files show exactly what goes where.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (b, n) in [
        ("thoth", 1000),
        ("thoth-agent", 2000),
        ("thoth-installer", 3000),
    ] {
        std::fs::write(bin.join(format!("{b}.exe")), format!("MZ {b} ").repeat(n)).unwrap();
    }
    let out = tmp.path().join("out");
    let msi = build("packaging/msi/build", &[&bin, &out], &[]);
    let export = |table: &str| -> Vec<Vec<String>> {
        let o = sh(Command::new("msiinfo").arg("export").arg(&msi).arg(table));
        stdout(&o)
            .lines()
            .skip(3) // column names, types, table name
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    };
    let mut files: Vec<(String, String, String)> = export("File")
        .into_iter()
        .map(|r| (r[2].clone(), r[1].clone(), r[3].clone()))
        .collect();
    files.sort();
    let size = |b: &str| std::fs::metadata(bin.join(b)).unwrap().len().to_string();
    assert_eq!(
        files,
        [
            (
                "thoth-agent.exe".to_owned(),
                "Agent".to_owned(),
                size("thoth-agent.exe")
            ),
            (
                "thoth-installer.exe".into(),
                "Installer".into(),
                size("thoth-installer.exe")
            ),
            ("thoth.exe".into(), "Proxy".into(), size("thoth.exe")),
        ]
    );
    let components = export("Component");
    assert!(
        components.iter().all(|c| c[2] == "INSTALLDIR"),
        "every file goes to INSTALLDIR: {components:?}"
    );
    let dirs = export("Directory");
    assert!(
        dirs.iter()
            .any(|d| d[0] == "INSTALLDIR" && d[1] == "ProgramFiles64Folder" && d[2] == "Thoth"),
        "{dirs:?}"
    );
    // The service: automatic start, LocalSystem, the same arguments the installer renders.
    let svc = export("ServiceInstall");
    assert_eq!(svc.len(), 1, "{svc:?}");
    let s = &svc[0];
    assert_eq!(
        (s[1].as_str(), s[3].as_str(), s[4].as_str()),
        ("ThothAgent", "16", "2")
    );
    assert_eq!(s[8], "LocalSystem");
    assert_eq!(
        s[10],
        r#"run --config "[CommonAppDataFolder]Thoth\agent.toml""#
    );
    assert_eq!(s[11], "Agent", "installed with thoth-agent.exe");
    let rendered = run(&["service", "--platform", "windows", "--prefix", "/x"], &[]);
    let rendered = stdout(&rendered);
    assert!(
        rendered.contains(r#"thoth-agent.exe\" run --config \""#)
            && rendered.contains(r"ProgramData\Thoth\agent.toml"),
        "the installer's definition matches the MSI's: {rendered}"
    );
    let control = export("ServiceControl");
    assert_eq!(control[0][1], "ThothAgent");
    // msidbServiceControlEventStop|UninstallStop|UninstallDelete = 1|2|128... (0xa2 = 162).
    assert_eq!(
        control[0][2], "162",
        "stopped on install and uninstall, removed on uninstall"
    );
    let props = export("Property");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        props
            .iter()
            .any(|p| p[0] == "ProductVersion" && p[1] == version)
    );
    assert!(
        props
            .iter()
            .any(|p| p[0] == "ProductName" && p[1] == "Thoth agent")
    );
    // The files inside are the ones given, byte for byte.
    let x = tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    sh(Command::new("msiextract").arg("-C").arg(&x).arg(&msi));
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        let name = format!("{b}.exe");
        let found = walk(&x)
            .into_iter()
            .find(|p| p.file_name().unwrap() == name.as_str());
        let found = found.unwrap_or_else(|| panic!("{name} not extracted"));
        assert_eq!(
            std::fs::read(found).unwrap(),
            std::fs::read(bin.join(&name)).unwrap()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_macos_pkg_payload_and_scripts_install_from_the_profile_on_a_target_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("stage");
    let built = build(
        "packaging/macos/build-pkg",
        &[Path::new("--payload-only"), &bins(), &stage],
        &[],
    );
    assert_eq!(built, stage);
    assert_eq!(
        tree(&stage.join("payload")),
        [
            "Library/",
            "Library/Application Support/",
            "Library/Application Support/Thoth/",
            "Library/Application Support/Thoth/bin/",
            "Library/Application Support/Thoth/bin/thoth",
            "Library/Application Support/Thoth/bin/thoth-agent",
            "Library/Application Support/Thoth/bin/thoth-installer",
            "Library/Application Support/Thoth/doc/",
            "Library/Application Support/Thoth/doc/agent.example.toml",
            "Library/Application Support/Thoth/doc/uninstall.sh",
        ]
    );
    for s in ["preinstall", "postinstall"] {
        assert_eq!(mode(&stage.join("scripts").join(s)), 0o755, "{s}");
    }
    let dist = std::fs::read_to_string(stage.join("distribution.xml")).unwrap();
    assert!(dist.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    sh(Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])",
        ])
        .arg(stage.join("distribution.xml")));

    // What Installer.app does on a target volume: copy the payload, run the scripts with
    // $1 package, $2 install location, $3 target volume. The profile is already installed.
    let vol = tmp.path().join("Macintosh HD");
    sh(Command::new("cp")
        .arg("-a")
        .arg(stage.join("payload/."))
        .arg(&vol));
    write_managed_prefs(
        &vol,
        &mobileconfig_settings("https://127.0.0.1:1", "acme-mac"),
    );
    let script = |name: &str| {
        let mut c = Command::new(stage.join("scripts").join(name));
        c.args(["/tmp/thoth.pkg", "/"])
            .arg(format!("{}/", vol.display()))
            .env("THOTH_INSTALLER_PLATFORM", "macos");
        c.output().unwrap()
    };
    let pre = script("preinstall");
    assert!(pre.status.success());
    let post = script("postinstall");
    assert!(
        post.status.success(),
        "unreachable controller is not a failure: {}",
        text(&post)
    );
    assert!(!text(&post).contains("s3cr3t"));
    assert!(
        vol.join("Library/LaunchDaemons/com.thoth.agent.plist")
            .exists()
    );
    let cfg =
        std::fs::read_to_string(vol.join("Library/Application Support/Thoth/agent.toml")).unwrap();
    assert!(cfg.contains("tenant = \"acme-mac\""), "{cfg}");
    // An upgrade: preinstall says so, postinstall changes nothing.
    assert!(text(&script("preinstall")).contains("upgrading in place"));
    let again = script("postinstall");
    assert!(again.status.success());
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));
    // Without a profile or an earlier install, the package installs and says what is missing.
    let bare = tmp.path().join("bare");
    sh(Command::new("cp")
        .arg("-a")
        .arg(stage.join("payload/."))
        .arg(&bare));
    let mut c = Command::new(stage.join("scripts/postinstall"));
    c.args(["/tmp/thoth.pkg", "/"])
        .arg(&bare)
        .env("THOTH_INSTALLER_PLATFORM", "macos");
    let o = c.output().unwrap();
    assert!(o.status.success());
    assert!(text(&o).contains("configuration profile"), "{}", text(&o));
    assert!(
        !bare
            .join("Library/Application Support/Thoth/agent.toml")
            .exists()
    );
    assert!(!bare.join("Library/LaunchDaemons").exists());
}
