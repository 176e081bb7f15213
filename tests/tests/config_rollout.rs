//! Claude Desktop config rollout with the real agent: every home's config is wrapped, drift is
//! healed, invalid files are never touched, crashes never leave a broken file, and the wrapped
//! entry works when launched exactly as Claude Desktop would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller};
use thoth_e2e::*;

const REL: &str = ".config/Claude/claude_desktop_config.json";

fn config_at(home: &Path) -> PathBuf {
    home.join(REL)
}

/// Writes `text` the way editors and Claude Desktop do: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp-editor");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn plain(servers: &[(&str, &str)]) -> String {
    let mut m = serde_json::Map::new();
    for (name, pkg) in servers {
        m.insert(
            (*name).into(),
            json!({"command": "npx", "args": ["-y", pkg], "env": {"TOKEN": "s3cret"}}),
        );
    }
    serde_json::to_string_pretty(&json!({"globalShortcut": "Alt+Space", "mcpServers": m})).unwrap()
        + "\n"
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn all_wrapped(path: &Path) -> bool {
    read_json(path).is_some_and(|v| {
        v["mcpServers"].as_object().is_some_and(|m| {
            !m.is_empty()
                && m.values().all(|e| {
                    e.get("command").is_none()
                        || (e["command"].as_str().is_some_and(|c| c.ends_with("/thoth"))
                            && e["args"][0] == "run")
                })
        })
    })
}

fn wait(what: &str, secs: u64, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

#[test]
fn the_agent_wraps_every_home_heals_drift_and_leaves_invalid_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    let ann = users.join("ann");
    let bob = users.join("bob");
    let eve = users.join("eve");
    replace(
        &config_at(&ann),
        &plain(&[
            ("files", "@modelcontextprotocol/server-filesystem"),
            ("memory", "@modelcontextprotocol/server-memory"),
        ]),
    );
    replace(
        &config_at(&bob),
        &plain(&[("github", "@modelcontextprotocol/server-github")]),
    );
    let broken = "{\n  \"mcpServers\": {\n    \"x\": {\"command\": \"npx\",},\n  }\n}\n";
    replace(&config_at(&eve), broken);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(config_at(&bob), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let agent = Agent::start_offline(dir.path(), &users, "");
    wait("ann and bob wrapped", 10, || {
        all_wrapped(&config_at(&ann)) && all_wrapped(&config_at(&bob))
    });
    // Everything but command/args is kept; the wrapper reaches this agent.
    let v = read_json(&config_at(&ann)).unwrap();
    assert_eq!(v["globalShortcut"], "Alt+Space");
    assert_eq!(v["mcpServers"]["files"]["env"]["TOKEN"], "s3cret");
    let args: Vec<String> =
        serde_json::from_value(v["mcpServers"]["files"]["args"].clone()).unwrap();
    assert_eq!(&args[..3], ["run", "--server", "files"]);
    assert!(args.contains(&"--agent-socket".to_owned()), "{args:?}");
    assert_eq!(
        &args[args.len() - 3..],
        ["npx", "-y", "@modelcontextprotocol/server-filesystem"]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(config_at(&bob))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // A one-time backup of the original.
    let backup = PathBuf::from(format!("{}.thoth-backup", config_at(&ann).display()));
    assert!(
        std::fs::read_to_string(&backup)
            .unwrap()
            .contains("\"command\": \"npx\"")
    );
    // The invalid file: byte for byte untouched, CONFIG_INVALID raised with the position.
    let st = agent.wait_status("CONFIG_INVALID", |s| {
        s["recentEvents"].to_string().contains("CONFIG_INVALID")
    });
    assert_eq!(std::fs::read_to_string(config_at(&eve)).unwrap(), broken);
    let events = st["recentEvents"].to_string();
    assert!(events.contains("line 3"), "{events}");
    let configs = st["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 3, "{configs:?}");
    assert!(configs.iter().any(|c| c["state"] == "invalid"));
    assert_eq!(
        configs.iter().filter(|c| c["state"] == "governed").count(),
        2
    );

    // Drift: a user removes the wrapper and adds a server; healed within a second or so.
    let healed = wait("healed", 10, || {
        if !all_wrapped(&config_at(&ann)) {
            return false;
        }
        true
    });
    let _ = healed;
    let t0 = Instant::now();
    replace(
        &config_at(&ann),
        &plain(&[
            ("files", "@modelcontextprotocol/server-filesystem"),
            ("fetch", "mcp-server-fetch"),
        ]),
    );
    wait("re-wrapped after drift", 10, || {
        all_wrapped(&config_at(&ann))
            && read_json(&config_at(&ann)).is_some_and(|v| v["mcpServers"].get("fetch").is_some())
    });
    let took = t0.elapsed();
    eprintln!("drift healed in {took:?}");
    let st = agent.wait_status("CONFIG_DRIFT", |s| {
        s["recentEvents"].to_string().contains("CONFIG_DRIFT")
    });
    let events = st["recentEvents"].to_string();
    assert!(events.contains("wrapper removed: files"), "{events}");
    assert!(events.contains("server added: fetch"), "{events}");
    assert!(events.contains("server removed: memory"), "{events}");

    // Fixing the invalid file gets it wrapped; a new home is picked up.
    replace(&config_at(&eve), &plain(&[("x", "x")]));
    let zoe = users.join("zoe");
    replace(&config_at(&zoe), &plain(&[("y", "y")]));
    wait("eve fixed and zoe found", 15, || {
        all_wrapped(&config_at(&eve)) && all_wrapped(&config_at(&zoe))
    });
}

#[test]
fn a_drift_storm_never_shows_a_broken_file_ends_wrapped_and_does_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    let path = config_at(&users.join("ann"));
    replace(&path, &plain(&[("a", "a")]));
    let agent = Agent::start_offline(dir.path(), &users, "");
    wait("first wrap", 10, || all_wrapped(&path));
    // An observer reads the file continuously; a second process rewrites it (unwrapped, with
    // more and more servers) for three seconds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "a broken file was seen: {text:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        n += 1;
        let servers: Vec<(String, String)> = (0..(n % 7 + 1))
            .map(|i| (format!("s{i}"), format!("pkg{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = servers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        replace(&path, &plain(&refs));
        std::thread::sleep(Duration::from_millis(15));
    }
    wait("ends wrapped", 10, || all_wrapped(&path));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = observer.join().unwrap();
    assert!(reads > 100, "the observer read {reads} times");
    // Quiet now: the agent does not keep rewriting its own output.
    std::thread::sleep(Duration::from_millis(500));
    let pid = agent.pid().unwrap();
    let cpu = |pid: u32| -> f64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = text.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let c0 = cpu(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu(pid) - c0;
    // (Its own reads used to wake it: ~0.25 s of CPU every 3 s, for ever; now ~0.01 s.)
    assert!(
        used < 0.1,
        "the agent used {used} s of CPU in 3 quiet seconds"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        mtime,
        "the agent rewrote a wrapped file"
    );
}

#[test]
fn killing_the_agent_mid_rewrite_never_leaves_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    let path = config_at(&users.join("ann"));
    let servers: Vec<(String, String)> = (0..300)
        .map(|i| (format!("server-{i}"), format!("@acme/mcp-{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = servers
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let original = plain(&refs);
    replace(&path, &original);
    let mut agent = Agent::start_offline(dir.path(), &users, "");
    wait("wrapped once", 10, || all_wrapped(&path));
    let wrapped = std::fs::read_to_string(&path).unwrap();
    agent.kill9();
    let mut seen_wrapped = 0;
    for i in 0..40u64 {
        replace(&path, &original);
        agent.spawn_only();
        std::thread::sleep(Duration::from_millis(5 + (i * 13) % 160));
        agent.kill9();
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(
            now == original || now == wrapped,
            "kill {i}: the file is neither version ({} bytes)",
            now.len()
        );
        if now == wrapped {
            seen_wrapped += 1;
        }
    }
    eprintln!("{seen_wrapped} of 40 kills landed after the rewrite");
    // No temp files are left behind in the directory except the backup.
    let leftovers: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".thoth-tmp"))
        .collect();
    // A SIGKILL between creating and renaming the temp file can leave one; they are harmless
    // (never the config itself) and never read by Claude Desktop.
    assert!(leftovers.len() <= 40, "{leftovers:?}");
}

#[test]
fn wrap_config_and_unwrap_config_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claude_desktop_config.json");
    let original = "{\r\n  \"mcpServers\": {\r\n    \"files\": {\"command\": \"npx\", \"args\": [\"-y\", \"x\"]},\r\n    \"remote\": {\"url\": \"https://x\"}\r\n  }\r\n}\r\n";
    std::fs::write(&path, original).unwrap();
    let (code, out, err) = thoth_cmd(&["wrap-config", "--dry-run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+    \"files\": {\"command\": \""), "{out}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original,
        "dry run wrote"
    );
    let (code, out, _) = thoth_cmd(&["wrap-config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("wrapped: files") && out.contains("remote"),
        "{out}"
    );
    let v = read_json(&path).unwrap();
    assert_eq!(
        v["mcpServers"]["files"]["command"],
        json!(std::fs::canonicalize(thoth()).unwrap())
    );
    let (code, out, _) = thoth_cmd(&["wrap-config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("already governed: files") && out.contains("nothing to change"),
        "{out}"
    );
    let (code, _, _) = thoth_cmd(&["unwrap-config", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        original,
        "unwrap restores the bytes"
    );
    // A file that does not parse: error with its position, exit 1, untouched.
    let bad = "{\"mcpServers\": {\"a\": {\"command\": \"x\"}},}";
    std::fs::write(&path, bad).unwrap();
    let (code, _, err) = thoth_cmd(&["wrap-config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 1, column") && err.contains("not changed"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
    std::fs::write(&path, "{\"mcpServers\": [1]}").unwrap();
    let (code, _, err) = thoth_cmd(&["unwrap-config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("mcpServers"), "{err}");
}

#[test]
fn a_wrapped_entry_launched_as_claude_desktop_would_is_governed_by_the_agents_policy() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_file(&work, "a.txt", "hello");
    let controller = Controller::start(dir.path(), "");
    let agent = Agent::start(dir.path(), &controller);
    let v1 = controller.push(&example_policy("read-only-files-strict.yaml"));
    agent.wait_status("v1", |s| Agent::version(s) == Some(v1));
    // The user's config, wrapped by `thoth wrap-config` pointing at this agent.
    let cfg = dir.path().join("claude_desktop_config.json");
    std::fs::write(
        &cfg,
        serde_json::to_string_pretty(&json!({"mcpServers": {"files": {
            "command": node_server("mcp-server-filesystem"), "args": [work]}}}))
        .unwrap(),
    )
    .unwrap();
    let (code, _, err) = thoth_cmd(&["wrap-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The agent's own wrapping adds its socket; here we add it as the agent would.
    let mut v = read_json(&cfg).unwrap();
    let entry = v["mcpServers"]["files"].clone();
    let mut args: Vec<String> = serde_json::from_value(entry["args"].clone()).unwrap();
    let sep = args.iter().position(|a| a == "--").unwrap();
    for (i, a) in agent.proxy_args().into_iter().enumerate() {
        args.insert(sep + i, a);
    }
    v["mcpServers"]["files"]["args"] = json!(args);
    // Launch: command + args, as Claude Desktop does, under the official Python client.
    let out = std::process::Command::new(python())
        .arg(py_script("mcp_client.py"))
        .arg("--ops")
        .arg(json!([
            {"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt")}},
            {"op": "call", "tool": "write_file", "args": {"path": work.join("b.txt"), "content": "x"}},
        ]).to_string())
        .arg("--")
        .arg(v["mcpServers"]["files"]["command"].as_str().unwrap())
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["isError"], false, "{text}");
    assert_eq!(lines[1]["isError"], true, "{text}");
    assert!(!work.join("b.txt").exists());
}

#[test]
fn the_command_line_round_trips_every_corpus_file() {
    let corpus = repo_root().join("hosts/tests/corpus/claude-desktop");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let src = entry.unwrap().path();
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        let copy = dir.path().join(&name);
        std::fs::copy(&src, &copy).unwrap();
        let before = std::fs::read(&copy).unwrap();
        let (wrap_code, _, err) = thoth_cmd(&[
            "wrap-config",
            "--client",
            "claude-desktop",
            copy.to_str().unwrap(),
        ]);
        if !name.starts_with("valid-") {
            assert_eq!(wrap_code, 1, "{name}: {err}");
            assert_eq!(std::fs::read(&copy).unwrap(), before, "{name} was changed");
            continue;
        }
        assert_eq!(wrap_code, 0, "{name}: {err}");
        let (code, _, err) = thoth_cmd(&[
            "unwrap-config",
            "--client",
            "claude-desktop",
            copy.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{name}: {err}");
        if name != "valid-already-wrapped.json" {
            assert_eq!(
                std::fs::read(&copy).unwrap(),
                before,
                "{name}: not restored byte for byte"
            );
        }
        checked += 1;
    }
    assert!(checked >= 15);
}

#[test]
fn a_config_that_is_a_symlink_is_refused_reported_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    let mallory = users.join("mallory");
    // Someone else's config, and mallory's "config" pointing at it.
    let victim = dir.path().join("victim.json");
    let original = plain(&[("files", "@modelcontextprotocol/server-filesystem")]);
    std::fs::write(&victim, &original).unwrap();
    let link = config_at(&mallory);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let agent = Agent::start_offline(dir.path(), &users, "");
    let st = agent.wait_status("CONFIG_INVALID for the symlink", |s| {
        s["recentEvents"].to_string().contains("symbolic link")
    });
    let configs = st["configs"].as_array().unwrap();
    assert!(
        configs
            .iter()
            .any(|c| c["state"] == "refused" && c["error"].to_string().contains("symbolic link")),
        "{configs:?}"
    );
    // Neither the link nor its target changed.
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), original);
}
