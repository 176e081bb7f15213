//! A user cannot opt a governed server out through the wrapper's arguments or environment: on a
//! machine with an installed agent, `thoth run` ignores `--policy`, `--agent-socket` and
//! `--state-dir`; with dynamic loader variables in its environment it denies every call.
//! These run the real `thoth` binary with `cat` as the MCP server: a forwarded call comes back
//! as its own echo, a denied one as the proxy's error result.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

/// `one_call` with string arguments and environment.
fn one_call(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let env: Vec<(&str, &std::ffi::OsStr)> = env
        .iter()
        .map(|(k, v)| (*k, std::ffi::OsStr::new(v)))
        .collect();
    common::one_call(dir, &args, &env)
}
const ALLOW_ALL: &str =
    "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [\"*\"]\n";

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("thoth-opt-out-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn forwarded(answer: &Value) -> bool {
    answer.get("method").is_some()
}

fn denial_text(answer: &Value) -> String {
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn without_an_installed_agent_the_policy_file_governs() {
    let dir = temp_dir();
    std::fs::write(dir.join("allow.yaml"), ALLOW_ALL).unwrap();
    let (answer, err) = one_call(
        &dir,
        &[
            "--policy",
            "allow.yaml",
            "--agent-socket",
            "nosock",
            "--state-dir",
            "st",
        ],
        &[],
    );
    // (The test runner's own LD_LIBRARY_PATH, if any, loads nothing of ours: no refusal.)
    assert!(forwarded(&answer), "{answer} {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_managed_machine_ignores_user_supplied_policy_socket_and_state_dir() {
    let dir = temp_dir();
    std::fs::write(dir.join("allow.yaml"), ALLOW_ALL).unwrap();
    std::fs::create_dir_all(dir.join("agent-state")).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsocket_path = {:?}\n",
            dir.join("agent-state"),
            dir.join("agent.sock")
        ),
    )
    .unwrap();
    let (answer, err) = one_call(
        &dir,
        &[
            "--policy",
            "allow.yaml",
            "--agent-socket",
            "nosock",
            "--state-dir",
            "st",
        ],
        &[("THOTH_TEST_MANAGED_CONFIG", config.to_str().unwrap())],
    );
    assert!(
        !forwarded(&answer),
        "the user's allow-all policy was used: {answer}"
    );
    let text = denial_text(&answer);
    assert!(text.contains("no policy"), "{text}");
    assert!(
        err.contains("ignoring --policy allow.yaml, --agent-socket nosock, --state-dir st"),
        "the log says what was ignored: {err}"
    );
    // The environment variables are overrides too.
    let (answer, _) = one_call(
        &dir,
        &[],
        &[
            ("THOTH_TEST_MANAGED_CONFIG", config.to_str().unwrap()),
            ("THOTH_POLICY", "allow.yaml"),
        ],
    );
    assert!(!forwarded(&answer), "{answer}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loader_variables_in_the_environment_make_every_call_denied_with_an_event() {
    let dir = temp_dir();
    std::fs::write(dir.join("allow.yaml"), ALLOW_ALL).unwrap();
    for (var, value) in [
        // A library that does not exist: the loader warns and goes on, as with a real one.
        ("LD_PRELOAD", "/nonexistent/libfaketime.so.1"),
        ("LD_AUDIT", "/nonexistent/audit.so"),
        ("DYLD_INSERT_LIBRARIES", "/nonexistent/x.dylib"),
    ] {
        let events = dir.join(format!("{var}.jsonl"));
        let (answer, err) = one_call(
            &dir,
            &[
                "--policy",
                "allow.yaml",
                "--events",
                events.to_str().unwrap(),
            ],
            &[(var, value), ("FAKETIME", "+1d")],
        );
        assert!(!forwarded(&answer), "{var}: {answer}");
        let text = denial_text(&answer);
        assert!(text.contains(var), "{var}: {text}");
        assert!(err.contains(var), "{var}: the log says why: {err}");
        let events = std::fs::read_to_string(&events).unwrap();
        let pre: Value = events
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["eventType"] == "TOOL_CALL_PRE")
            .expect("a PRE event");
        assert_eq!(pre["decision"]["action"], "deny", "{pre}");
        assert_eq!(pre["decision"]["rule"], "refused", "{pre}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `LD_LIBRARY_PATH` counts when it made the loader take a library from a directory a user can
/// write (here: this process's own libc, copied there).
#[cfg(target_os = "linux")]
#[test]
fn a_library_path_a_user_can_write_makes_every_call_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    std::fs::write(dir.join("allow.yaml"), ALLOW_ALL).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .expect("this test links libc dynamically");
    let libs = dir.join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::copy(libc, libs.join("libc.so.6")).unwrap();
    std::fs::set_permissions(&libs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (answer, _) = one_call(
        &dir,
        &["--policy", "allow.yaml"],
        &[("LD_LIBRARY_PATH", libs.to_str().unwrap())],
    );
    assert!(denial_text(&answer).contains("LD_LIBRARY_PATH"), "{answer}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_does_not_call_an_altered_wrapper_governed() {
    let dir = temp_dir();
    let config = dir.join("agent.toml");
    std::fs::write(&config, "").unwrap();
    let claude = dir.join("claude_desktop_config.json");
    // The agent's own thoth (this config names none: the one beside the running binary).
    let thoth = std::fs::canonicalize(env!("CARGO_BIN_EXE_thoth")).unwrap();
    let thoth = serde_json::to_string(&thoth.display().to_string()).unwrap();
    std::fs::write(
        &claude,
        format!(
            r#"{{"mcpServers": {{
  "files": {{"command": {thoth}, "args": ["run", "--server", "files", "--policy", "/home/ann/allow.yaml", "--", "npx", "server-filesystem"]}},
  "notes": {{"command": {thoth}, "args": ["run", "--server", "notes", "--client", "claude-desktop", "--", "python3", "notes.py"]}},
  "timed": {{"command": {thoth}, "args": ["run", "--server", "timed", "--client", "claude-desktop", "--", "uvx", "t"], "env": {{"LD_PRELOAD": "/usr/lib/faketime/libfaketime.so.1"}}}}
}}}}"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_thoth"))
        .args(["status", "--json", "--agent-socket"])
        .arg(dir.join("nosock"))
        .arg("--claude-config")
        .arg(&claude)
        .env("THOTH_TEST_MANAGED_CONFIG", &config)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |name: &str| {
        doc["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(state("notes")["state"], "governed", "{doc}");
    assert_eq!(state("files")["state"], "not governed", "{doc}");
    assert!(
        state("files")["why"]
            .as_str()
            .unwrap()
            .contains("added --policy /home/ann/allow.yaml"),
        "{doc}"
    );
    assert_eq!(state("timed")["state"], "not governed", "{doc}");
    let problems = doc["problems"].to_string();
    assert!(problems.contains("files (wrapper altered"), "{problems}");
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).unwrap();
}
