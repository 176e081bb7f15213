//! The macOS and Windows layouts, laid out under a temp root (`--platform … --prefix`): the tree,
//! the launchd plist, settings from the shipped configuration profile, status and uninstall.

mod common;

use std::path::Path;

use common::*;

#[test]
fn macos_install_from_the_configuration_profile_lays_out_the_launch_daemon_and_uninstalls_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mac");
    let p = root.to_str().unwrap();
    // What MDM delivers: the profile's settings as managed preferences.
    write_managed_prefs(
        &root,
        &mobileconfig_settings("https://127.0.0.1:1", "acme-mac"),
    );
    let from = bins();
    let out = run(
        &[
            "install",
            "--platform",
            "macos",
            "--prefix",
            p,
            "--no-start",
            "--from",
            from.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("s3cr3t"), "the token was printed");
    assert_eq!(
        tree(&root),
        [
            "Library/",
            "Library/Application Support/",
            "Library/Application Support/Thoth/",
            "Library/Application Support/Thoth/agent.toml",
            "Library/Application Support/Thoth/bin/",
            "Library/Application Support/Thoth/bin/thoth",
            "Library/Application Support/Thoth/bin/thoth-agent",
            "Library/Application Support/Thoth/bin/thoth-installer",
            "Library/Application Support/Thoth/enrollment-token",
            "Library/Application Support/Thoth/state/",
            "Library/Application Support/Thoth/state/install.json",
            "Library/LaunchDaemons/",
            "Library/LaunchDaemons/com.thoth.agent.plist",
            "Library/Logs/",
            "Library/Logs/Thoth/",
            "Library/Managed Preferences/",
            "Library/Managed Preferences/com.thoth.agent.plist",
        ]
    );
    let support = root.join("Library/Application Support/Thoth");
    assert_eq!(mode(&support.join("enrollment-token")), 0o600);
    assert_eq!(
        std::fs::read_to_string(support.join("enrollment-token"))
            .unwrap()
            .trim(),
        TOKEN
    );
    let cfg: toml::Table = std::fs::read_to_string(support.join("agent.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cfg["tenant"].as_str(), Some("acme-mac"));
    assert_eq!(cfg["labels"]["managed-by"].as_str(), Some("jamf"));
    assert_eq!(
        cfg["state_dir"].as_str(),
        Some(support.join("state").to_str().unwrap())
    );
    assert_eq!(
        cfg["users_root"].as_str(),
        Some(root.join("Users").to_str().unwrap())
    );
    assert!(!cfg.to_string().contains("s3cr3t"));
    // The LaunchDaemon runs the installed agent with the installed config, and restarts it.
    let daemon: plist::Value =
        plist::from_file(root.join("Library/LaunchDaemons/com.thoth.agent.plist")).unwrap();
    let d = daemon.as_dictionary().unwrap();
    assert_eq!(d["Label"].as_string(), Some("com.thoth.agent"));
    let args: Vec<String> = d["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_string().unwrap().to_owned())
        .collect();
    assert_eq!(
        args,
        [
            support.join("bin/thoth-agent").display().to_string(),
            "run".into(),
            "--config".into(),
            support.join("agent.toml").display().to_string(),
        ]
    );
    assert!(Path::new(&args[0]).exists());
    assert_eq!(d["KeepAlive"].as_boolean(), Some(true));
    // The agent itself accepts the config written for it.
    let check = std::process::Command::new(bins().join("thoth-agent"))
        .args(["check-config", "--config"])
        .arg(support.join("agent.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    // Status and uninstall on the same layout.
    let st = run(
        &["status", "--json", "--platform", "macos", "--prefix", p],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        (v["installed"].as_bool(), v["tenant"].as_str()),
        (Some(true), Some("acme-mac"))
    );
    let out = run(&["uninstall", "--platform", "macos", "--prefix", p], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Only what the MDM owns (the managed preferences) is left.
    assert_eq!(
        tree(&root)
            .into_iter()
            .filter(|e| !e.ends_with('/'))
            .collect::<Vec<_>>(),
        ["Library/Managed Preferences/com.thoth.agent.plist"]
    );
}

#[test]
fn a_broken_configuration_profile_is_refused_with_its_path_and_nothing_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mac");
    let mut s = mobileconfig_settings("https://127.0.0.1:1", "acme");
    s.insert("tenant".into(), plist::Value::Boolean(true));
    write_managed_prefs(&root, &s);
    let out = run(
        &[
            "install",
            "--platform",
            "macos",
            "--prefix",
            root.to_str().unwrap(),
            "--no-start",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("com.thoth.agent.plist") && text(&out).contains("tenant"),
        "{}",
        text(&out)
    );
    assert!(!root.join("usr").exists());
}

#[test]
fn windows_layout_puts_program_files_and_program_data_apart_and_renders_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("win");
    let p = root.to_str().unwrap();
    // Windows binaries cannot be built here; the layout only needs files with those names.
    let from = tmp.path().join("exe");
    std::fs::create_dir_all(&from).unwrap();
    for b in ["thoth", "thoth-agent", "thoth-installer"] {
        std::fs::write(from.join(format!("{b}.exe")), format!("MZ {b}")).unwrap();
    }
    let out = run(
        &[
            "install",
            "--platform",
            "windows",
            "--prefix",
            p,
            "--no-start",
            "--from",
            from.to_str().unwrap(),
            "--controller",
            "https://127.0.0.1:1",
            "--tenant",
            "acme-win",
            "--ca-fingerprint",
            FP,
            "--root-key",
            ROOT_KEY,
        ],
        &[("THOTH_ENROLL_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        tree(&root),
        [
            "Program Files/",
            "Program Files/Thoth/",
            "Program Files/Thoth/thoth-agent.exe",
            "Program Files/Thoth/thoth-installer.exe",
            "Program Files/Thoth/thoth.exe",
            "ProgramData/",
            "ProgramData/Thoth/",
            "ProgramData/Thoth/agent.toml",
            "ProgramData/Thoth/enrollment-token",
            "ProgramData/Thoth/state/",
            "ProgramData/Thoth/state/install.json",
        ]
    );
    let cfg: toml::Table = std::fs::read_to_string(root.join("ProgramData/Thoth/agent.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cfg["thoth_path"]
            .as_str()
            .unwrap()
            .ends_with("Thoth/thoth.exe")
    );
    // The service definition: sc.exe commands with the installed paths.
    let svc = run(&["service", "--platform", "windows", "--prefix", p], &[]);
    let text = String::from_utf8_lossy(&svc.stdout);
    assert!(text.contains("create ThothAgent binPath= "), "{text}");
    assert!(
        text.contains(r#"Program Files\Thoth\thoth-agent.exe\" run --config \""#)
            && text.contains(r"ProgramData\Thoth\agent.toml"),
        "{text}"
    );
    assert!(text.contains("failure ThothAgent reset= 86400 actions= restart/"));
    let out = run(&["uninstall", "--platform", "windows", "--prefix", p], &[]);
    assert!(out.status.success());
    assert!(
        tree(&root).iter().all(|e| e.ends_with('/')),
        "{:?}",
        tree(&root)
    );
    assert!(!root.join("Program Files/Thoth").exists());
}
