//! The agent's service definition per platform — the templates in `packaging/service/`, filled
//! in with this layout's paths — and the commands that register, start and remove it.

use crate::layout::{LAUNCHD_LABEL, Layout, Platform, SYSTEMD_UNIT, WINDOWS_SERVICE};

const SYSTEMD: &str = include_str!("../../packaging/service/thoth-agent.service");
const LAUNCHD: &str = include_str!("../../packaging/service/com.thoth.agent.plist");
const WINDOWS: &str = include_str!("../../packaging/service/thoth-agent.windows.txt");

/// The service definition for `l`: a systemd unit, a launchd plist, or sc.exe command lines.
pub(crate) fn render(l: &Layout) -> String {
    let path = |p: std::path::PathBuf| p.display().to_string();
    let bin = path(l.bin_dir());
    let etc = path(l.etc());
    match l.platform {
        Platform::Linux => {
            // systemd splits ExecStart on spaces unless an argument is quoted.
            // `%` starts a specifier in unit files: doubled.
            let quote = |p: String| {
                let p = p.replace('%', "%%");
                if p.contains(char::is_whitespace) || p.contains('"') {
                    format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
                } else {
                    p
                }
            };
            let agent = quote(path(l.bin_dir().join("thoth-agent")));
            let config = quote(path(l.etc().join("agent.toml")));
            fill(SYSTEMD, &[("@AGENT@", &agent), ("@CONFIG@", &config)])
        }
        Platform::Macos => {
            let log = path(l.launchd_log());
            fill(
                LAUNCHD,
                &[
                    ("@BIN@", &xml_escape(&bin)),
                    ("@ETC@", &xml_escape(&etc)),
                    ("@LOG@", &xml_escape(&log)),
                ],
            )
        }
        Platform::Windows => {
            let win = |s: String| s.replace('/', "\\");
            fill(WINDOWS, &[("@BIN@", &win(bin)), ("@ETC@", &win(etc))])
        }
    }
}

fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (k, v) in values {
        out = out.replace(k, v);
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The sc.exe argument lines of a rendered Windows definition (comments and blanks dropped).
pub(crate) fn windows_lines(rendered: &str) -> Vec<&str> {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// One command: program and arguments. `raw` is a Windows command line passed as is (sc.exe
/// parses its own quoting).
#[derive(Debug, PartialEq)]
pub(crate) struct Cmd {
    pub program: &'static str,
    pub args: Vec<String>,
    pub raw: Option<String>,
    /// A failure is expected and harmless (stopping what is not running).
    pub may_fail: bool,
}

fn cmd(program: &'static str, args: &[&str], may_fail: bool) -> Cmd {
    Cmd {
        program,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        raw: None,
        may_fail,
    }
}

/// What to run to (re)register and start the service after its definition was written.
pub(crate) fn start_plan(l: &Layout) -> Vec<Cmd> {
    match l.platform {
        Platform::Linux => vec![
            cmd("systemctl", &["daemon-reload"], false),
            cmd("systemctl", &["enable", SYSTEMD_UNIT], false),
            cmd("systemctl", &["restart", SYSTEMD_UNIT], false),
        ],
        Platform::Macos => {
            let plist = l.launchd_plist();
            let target = format!("system/{LAUNCHD_LABEL}");
            vec![
                cmd("launchctl", &["bootout", &target], true),
                cmd(
                    "launchctl",
                    &["bootstrap", "system", &plist.display().to_string()],
                    false,
                ),
                cmd("launchctl", &["enable", &target], false),
                cmd("launchctl", &["kickstart", "-k", &target], false),
            ]
        }
        Platform::Windows => {
            let mut plan = vec![
                cmd("sc.exe", &["stop", WINDOWS_SERVICE], true),
                cmd("sc.exe", &["delete", WINDOWS_SERVICE], true),
            ];
            let rendered = render(l);
            for line in windows_lines(&rendered) {
                plan.push(Cmd {
                    program: "sc.exe",
                    args: Vec::new(),
                    raw: Some(line.to_owned()),
                    may_fail: false,
                });
            }
            plan.push(cmd("sc.exe", &["start", WINDOWS_SERVICE], false));
            plan
        }
    }
}

/// What to run to stop and unregister the service (before its definition is removed).
pub(crate) fn stop_plan(l: &Layout) -> Vec<Cmd> {
    match l.platform {
        Platform::Linux => vec![
            cmd("systemctl", &["disable", "--now", SYSTEMD_UNIT], true),
            cmd("systemctl", &["daemon-reload"], true),
        ],
        Platform::Macos => vec![cmd(
            "launchctl",
            &["bootout", &format!("system/{LAUNCHD_LABEL}")],
            true,
        )],
        Platform::Windows => vec![
            cmd("sc.exe", &["stop", WINDOWS_SERVICE], true),
            cmd("sc.exe", &["delete", WINDOWS_SERVICE], true),
        ],
    }
}

/// Windows: what makes `ProgramData\Thoth` readable by users but writable by SYSTEM and
/// Administrators only, and the enrollment token readable by them only (`write_atomic`'s Unix
/// modes mean nothing there). Groups by SID: their names are localized.
pub(crate) fn windows_acl_plan(l: &Layout) -> Vec<Cmd> {
    if l.platform != Platform::Windows {
        return Vec::new();
    }
    let etc = l.etc().display().to_string();
    let token = l.etc().join("enrollment-token");
    let mut plan = vec![
        // Owned by Administrators all the way down (a user who pre-created a directory would
        // otherwise keep the owner's right to change its permissions).
        cmd(
            "icacls",
            &[&etc, "/setowner", "*S-1-5-32-544", "/T", "/C"],
            false,
        ),
        cmd(
            "icacls",
            &[
                &etc,
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:(OI)(CI)F",
                "*S-1-5-32-544:(OI)(CI)F",
                "*S-1-5-32-545:(OI)(CI)RX",
                "/T",
                "/C",
            ],
            false,
        ),
    ];
    if token.exists() {
        let token = token.display().to_string();
        plan.push(cmd(
            "icacls",
            &[
                &token,
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:F",
                "*S-1-5-32-544:F",
            ],
            false,
        ));
    }
    plan
}

/// Windows: waits (up to 30 s) until the service is stopped or gone; `sc.exe stop` returns
/// before it is, and its binary stays locked until then.
pub(crate) fn wait_stopped(l: &Layout) {
    if l.platform != Platform::Windows || !l.system || !cfg!(windows) {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match std::process::Command::new("sc.exe")
            .args(["query", WINDOWS_SERVICE])
            .output()
        {
            Ok(o) if String::from_utf8_lossy(&o.stdout).contains("STOPPED") => return,
            Ok(o) if o.status.code() == Some(1060) => return, // does not exist
            Err(_) => return,
            _ => std::thread::sleep(std::time::Duration::from_millis(250)),
        }
    }
}

/// Runs a plan; returns the failures that were not expected.
pub(crate) fn run(plan: &[Cmd]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in plan {
        let mut command = std::process::Command::new(c.program);
        command.args(&c.args);
        #[cfg(windows)]
        if let Some(raw) = &c.raw {
            use std::os::windows::process::CommandExt;
            command.raw_arg(raw);
        }
        let shown = c.raw.clone().unwrap_or_else(|| c.args.join(" "));
        match command.output() {
            Ok(o) if o.status.success() => {}
            _ if c.may_fail => {}
            Ok(o) => failures.push(format!(
                "{} {shown} failed: {}",
                c.program,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => failures.push(format!("{} {shown}: {e}", c.program)),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(p: Platform) -> Layout {
        Layout::new(Some("/opt/root dir".into()), p)
    }

    #[test]
    fn the_systemd_unit_runs_the_installed_agent_with_its_config() {
        let unit = render(&layout(Platform::Linux));
        assert!(unit.contains(
            "ExecStart=\"/opt/root dir/usr/local/bin/thoth-agent\" run --config \"/opt/root dir/etc/thoth/agent.toml\""
        ), "{unit}");
        assert!(!unit.contains('@'), "a placeholder was left: {unit}");
    }

    #[test]
    fn the_systemd_unit_keeps_the_state_private_and_bounds_the_agent() {
        let unit = render(&layout(Platform::Linux));
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for want in [
            // Spool and status are the agent's alone; proxies open two files by name.
            "StateDirectoryMode=0711",
            "UMask=0077",
            // Local users cannot exhaust descriptors or memory past these.
            "LimitNOFILE=65536",
            "MemoryMax=1G",
        ] {
            assert!(lines.contains(&want), "{want} missing from:\n{unit}");
        }
        assert!(!unit.contains("0755\nUMask") && !lines.contains(&"UMask=0022"));
    }

    #[test]
    fn the_launchd_plist_is_a_valid_plist_with_the_agent_arguments() {
        let l = Layout::new(Some("/tmp/a&b".into()), Platform::Macos);
        let text = render(&l);
        let v: plist::Value = plist::from_bytes(text.as_bytes()).expect("valid plist");
        let d = v.as_dictionary().unwrap();
        assert_eq!(d["Label"].as_string(), Some(LAUNCHD_LABEL));
        let args: Vec<&str> = d["ProgramArguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "/tmp/a&b/Library/Application Support/Thoth/bin/thoth-agent",
                "run",
                "--config",
                "/tmp/a&b/Library/Application Support/Thoth/agent.toml"
            ]
        );
        assert_eq!(d["KeepAlive"].as_boolean(), Some(true));
        assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
        // Files the agent makes are private unless it says so; descriptors are bounded.
        assert_eq!(d["Umask"].as_signed_integer(), Some(0o077));
        for limits in ["SoftResourceLimits", "HardResourceLimits"] {
            let l = d[limits].as_dictionary().unwrap();
            assert_eq!(l["NumberOfFiles"].as_signed_integer(), Some(65536));
        }
    }

    #[test]
    fn the_windows_service_is_registered_with_restart_on_failure() {
        let l = layout(Platform::Windows);
        let text = render(&l);
        let lines = windows_lines(&text);
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("create ThothAgent binPath= "));
        assert!(
            lines[0].contains(r#"\"\opt\root dir\Program Files\Thoth\thoth-agent.exe\" run --config \"\opt\root dir\ProgramData\Thoth\agent.toml\""#),
            "{}",
            lines[0]
        );
        assert!(lines[2].contains("actions= restart/5000"));
        let plan = start_plan(&l);
        assert_eq!(plan.last().unwrap().args, ["start", WINDOWS_SERVICE]);
        assert_eq!(plan.iter().filter(|c| c.raw.is_some()).count(), 4);
    }

    #[test]
    fn on_windows_the_token_is_for_system_and_administrators_only_by_sid() {
        assert!(windows_acl_plan(&layout(Platform::Linux)).is_empty());
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(Some(dir.path().to_path_buf()), Platform::Windows);
        assert_eq!(
            windows_acl_plan(&l).len(),
            2,
            "no token: nothing more to lock"
        );
        std::fs::create_dir_all(l.etc()).unwrap();
        std::fs::write(l.etc().join("enrollment-token"), "t").unwrap();
        let plan = windows_acl_plan(&l);
        assert!(plan.iter().all(|c| !c.may_fail));
        assert_eq!(
            plan[0].args[1..],
            ["/setowner", "*S-1-5-32-544", "/T", "/C"]
        );
        let token = &plan[2].args;
        assert!(token[0].ends_with("enrollment-token"));
        assert_eq!(
            token[1..],
            [
                "/inheritance:r",
                "/grant:r",
                "*S-1-5-18:F",
                "*S-1-5-32-544:F"
            ]
        );
        assert!(
            plan[1]
                .args
                .contains(&"*S-1-5-32-545:(OI)(CI)RX".to_owned())
        );
    }

    #[test]
    fn stopping_never_fails_the_uninstall_when_the_service_is_already_gone() {
        for p in [Platform::Linux, Platform::Macos, Platform::Windows] {
            assert!(stop_plan(&layout(p)).iter().all(|c| c.may_fail));
        }
        let failures = run(&[cmd("/nonexistent/thoth-test", &[], true)]);
        assert!(failures.is_empty());
        let failures = run(&[cmd("/nonexistent/thoth-test", &["x"], false)]);
        assert_eq!(failures.len(), 1);
    }
}
