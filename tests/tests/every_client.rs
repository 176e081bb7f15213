//! Every MCP client on a laptop, with the real agent: Claude Desktop (and two extensions), Claude
//! Code, Cursor, VS Code, Windsurf and Codex for two users are governed within seconds, each
//! wrapped entry launched exactly as its client would runs under the agent's policy, the fleet
//! inventory shows every server (remote ones ungoverned), unwrapping restores every file byte for
//! byte, and Claude Code's own rewrites of `~/.claude.json` are neither lost nor fought.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thoth_e2e::fleet::{Agent, Controller};
use thoth_e2e::*;
use thoth_hosts::host::{HostFilter, Os};
use thoth_hosts::inventory::{self, State};

/// One user's files: (client id, path, original text).
type Files = Vec<(&'static str, PathBuf, String)>;

fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The manifest of a Node extension serving `work` through the npm filesystem server, with
/// `${__dirname}` and `${user_config.root}` as Claude substitutes them.
fn manifest(name: &str, overrides: &str) -> String {
    format!(
        "{{\n  \"manifest_version\": \"0.3\",\n  \"name\": \"{name}\",\n  \"version\": \"1.0.0\",\n  \"description\": \"Files, as an extension\",\n  \"author\": {{\"name\": \"Acme\"}},\n  \"server\": {{\n    \"type\": \"node\",\n    \"entry_point\": \"server-filesystem/index.mjs\",\n    \"mcp_config\": {{\n      \"command\": \"node\",\n      \"args\": [\"${{__dirname}}/server-filesystem/index.mjs\", \"${{user_config.root}}\"],\n      \"env\": {{\"ROOT\": \"${{user_config.root}}\"}}{overrides}\n    }}\n  }},\n  \"user_config\": {{\"root\": {{\"type\": \"directory\", \"title\": \"Root\", \"required\": true}}}}\n}}\n"
    )
}

/// Lays out every client's files for the user whose home is `home`, all serving `work`.
fn client_files(home: &Path, work: &Path) -> Files {
    let fs = node_server("mcp-server-filesystem").display().to_string();
    let w = work.display().to_string();
    let claude = home.join(".config/Claude");
    let ext_dir = claude.join("Claude Extensions");
    // The extensions' code: an ES module that runs the npm filesystem server.
    let fs_module = std::fs::canonicalize(&fs).unwrap();
    for id in ["ant.dir.files", "local.mcpb.notes"] {
        put(
            &ext_dir.join(id).join("server-filesystem/index.mjs"),
            &format!("import {};\n", q(&fs_module.display().to_string())),
        );
    }
    let files_manifest = manifest("files", "");
    let notes_manifest = manifest(
        "notes",
        ",\n      \"platform_overrides\": {\n        \"win32\": {\"command\": \"node.exe\"},\n        \"linux\": {\"env\": {\"NOTES\": \"1\"}}\n      }",
    );
    let registry = format!(
        "{{\"extensions\": {{\"ant.dir.files\": {{\"id\": \"ant.dir.files\", \"version\": \"1.0.0\", \"hash\": \"ab\", \"manifest\": {}}}, \"local.mcpb.notes\": {{\"id\": \"local.mcpb.notes\", \"version\": \"1.0.0\", \"manifest\": {}}}}}}}\n",
        files_manifest.trim(),
        notes_manifest.trim()
    );
    let project = home.join("proj");
    std::fs::create_dir_all(&project).unwrap();
    let files: Files = vec![
        (
            "claude-desktop",
            claude.join("claude_desktop_config.json"),
            format!(
                "{{\n  \"globalShortcut\": \"Alt+Space\",\n  \"mcpServers\": {{\n    \"files\": {{\"command\": {}, \"args\": [{}]}},\n    \"linear\": {{\"url\": \"https://mcp.linear.app/sse\"}}\n  }}\n}}\n",
                q(&fs),
                q(&w)
            ),
        ),
        (
            "claude-extension",
            ext_dir.join("ant.dir.files/manifest.json"),
            files_manifest,
        ),
        (
            "claude-extension",
            ext_dir.join("local.mcpb.notes/manifest.json"),
            notes_manifest,
        ),
        (
            "claude-extension",
            claude.join("extensions-installations.json"),
            registry,
        ),
        (
            "claude-code",
            home.join(".claude.json"),
            format!(
                "{{\n  \"numStartups\": 3,\n  \"mcpServers\": {{\n    \"fs\": {{\"type\": \"stdio\", \"command\": {}, \"args\": [{}], \"env\": {{\"CC\": \"1\"}}}}\n  }},\n  \"projects\": {{\n    {}: {{\n      \"allowedTools\": [],\n      \"mcpServers\": {{\"projfs\": {{\"type\": \"stdio\", \"command\": {}, \"args\": [{}]}}, \"sentry\": {{\"type\": \"http\", \"url\": \"https://mcp.sentry.dev/mcp\"}}}}\n    }}\n  }}\n}}\n",
                q(&fs),
                q(&w),
                q(&project.display().to_string()),
                q(&fs),
                q(&w)
            ),
        ),
        (
            "claude-code",
            project.join(".mcp.json"),
            format!(
                "{{\n  \"mcpServers\": {{\n    \"shared\": {{\n      \"command\": {},\n      \"args\": [\n        {}\n      ]\n    }}\n  }}\n}}\n",
                q(&fs),
                q(&w)
            ),
        ),
        (
            "cursor",
            home.join(".cursor/mcp.json"),
            format!(
                "{{\r\n  \"mcpServers\": {{\r\n    \"files\": {{\r\n      \"command\": {},\r\n      \"args\": [{}]\r\n    }}\r\n  }}\r\n}}\r\n",
                q(&fs),
                q(&w)
            ),
        ),
        (
            "vscode",
            home.join(".config/Code/User/mcp.json"),
            format!(
                "{{\n  // Servers for Copilot agent mode.\n  \"servers\": {{\n    \"files\": {{\n      \"type\": \"stdio\", /* local */\n      \"command\": {},\n      \"args\": [{},],\n    }},\n    \"github\": {{\"type\": \"http\", \"url\": \"https://api.githubcopilot.com/mcp/\"}},\n  }},\n  \"inputs\": [],\n}}\n",
                q(&fs),
                q(&w)
            ),
        ),
        (
            "windsurf",
            home.join(".codeium/windsurf/mcp_config.json"),
            format!(
                "{{\"mcpServers\": {{\"files\": {{\"command\": {}, \"args\": [{}]}}, \"docs\": {{\"serverUrl\": \"https://docs.example.com/mcp\"}}}}}}\n",
                q(&fs),
                q(&w)
            ),
        ),
        (
            "codex",
            home.join(".codex/config.toml"),
            format!(
                "model = \"o4-mini\"\n\n# MCP servers\n[mcp_servers.files]\ncommand = '{}'\nargs = [\n  '{}', # the work tree\n]\n\n[mcp_servers.remote]\nurl = \"https://mcp.example.org/mcp\"\n",
                fs, w
            ),
        ),
    ];
    for (_, path, text) in &files {
        put(path, text);
    }
    // The files extension is enabled; the notes one has no settings file (disabled).
    put(
        &claude.join("Claude Extensions Settings/ant.dir.files.json"),
        &format!(
            "{{\"isEnabled\": true, \"userConfig\": {{\"root\": {}}}}}",
            q(&w)
        ),
    );
    files
}

/// Every server of every client under `homes`, as the agent (thoth + extra) judges them.
fn scan(homes: &[PathBuf], agent: &Agent) -> Vec<inventory::FileInfo> {
    let thoth = std::fs::canonicalize(thoth()).unwrap();
    let extra = thoth_hosts::wrapper::canonical_extra(&agent.socket, &agent.state);
    inventory::scan(
        homes,
        &HostFilter::all(),
        &thoth.display().to_string(),
        &extra,
    )
}

fn ungoverned(files: &[inventory::FileInfo]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| {
            f.servers
                .iter()
                .filter(|s| matches!(s.state, State::NotGoverned(_)))
                .map(move |s| {
                    format!(
                        "{} {}: {} ({})",
                        f.host,
                        f.path.display(),
                        s.name,
                        s.state.reason()
                    )
                })
                .chain(
                    f.error
                        .iter()
                        .map(move |e| format!("{} {}: {e}", f.host, f.path.display())),
                )
        })
        .collect()
}

/// The command line a client runs for a wrapped entry, substituted as Claude substitutes an
/// extension's `${__dirname}` and `${user_config.X}`.
fn launch_line(client: &str, path: &Path, name: &str, work: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let host = thoth_hosts::host::by_id(client).unwrap();
    let found = thoth_hosts::format::entries(&text, &host.format(path)).unwrap();
    let found = host.servers(path, &text, found, Os::current());
    let f = found
        .iter()
        .find(|f| f.name == name || host.ctx(path).server == Some(name))
        .unwrap_or_else(|| panic!("{client}: no {name} in {}", path.display()));
    let dirname = path.parent().unwrap().display().to_string();
    let subst = |s: &str| {
        s.replace("${__dirname}", &dirname)
            .replace("${user_config.root}", &work.display().to_string())
    };
    (
        subst(f.entry.command.as_deref().unwrap()),
        f.entry
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| subst(a))
            .collect(),
    )
}

#[test]
fn every_client_of_every_user_is_governed_launched_as_its_client_would_and_restored_byte_for_byte()
{
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    write_file(&work, "a.txt", "hello");
    let users = dir.path().join("home");
    let homes = vec![users.join("ann"), users.join("bob")];
    let mut files: Files = Vec::new();
    for h in &homes {
        files.extend(client_files(h, &work));
    }
    let controller = Controller::start(dir.path(), "");
    let t0 = Instant::now();
    let mut agent = Agent::start(dir.path(), &controller);
    let v1 = controller.push(&example_policy("read-only-files-strict.yaml"));
    agent.wait_status("v1", |s| Agent::version(s) == Some(v1));
    // Governed within seconds: every local server of every client of both users.
    let mut last = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        last = ungoverned(&scan(&homes, &agent));
        if last.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last.is_empty(), "not governed after 30 s: {last:#?}");
    eprintln!(
        "every client governed {} ms after the agent started",
        t0.elapsed().as_millis()
    );
    let scanned = scan(&homes, &agent);
    let (servers, governed) = inventory::counts(&scanned);
    let remote = scanned
        .iter()
        .flat_map(|f| &f.servers)
        .filter(|s| s.state == State::Remote)
        .count();
    // Per user: desktop 1 + 2 extensions (each in its manifest and in the registry) + code 3 +
    // cursor 1 + vscode 1 + windsurf 1 + codex 1 local; desktop, code, vscode, windsurf, codex
    // one remote each.
    assert_eq!((governed, remote), (2 * 12, 2 * 5), "{scanned:#?}");
    assert_eq!(servers, governed + remote);

    // The fleet inventory shows every server, remote ones not governed.
    let want = |s: &Value| s["governed"].as_bool() == Some(true);
    let mut inv = Value::Null;
    wait_secs("the inventory", 30, || {
        let (code, out, _) = controller.ctl(&["inventory", "--json"]);
        inv = serde_json::from_str(&out).unwrap_or(Value::Null);
        code == 0
            && inv.to_string().contains("codex")
            && inv.to_string().contains("claude-extension")
    });
    let text = inv.to_string();
    for client in [
        "claude-desktop",
        "claude-extension",
        "claude-code",
        "cursor",
        "vscode",
        "windsurf",
        "codex",
    ] {
        assert!(
            text.contains(client),
            "{client} missing from the inventory: {inv:#}"
        );
    }
    for url in [
        "https://mcp.linear.app/sse",
        "https://mcp.sentry.dev/mcp",
        "https://api.githubcopilot.com/mcp/",
        "https://docs.example.com/mcp",
        "https://mcp.example.org/mcp",
    ] {
        assert!(
            text.contains(url),
            "{url} missing from the inventory: {inv:#}"
        );
    }
    let (code, out, err) = controller.ctl(&["inventory", "--ungoverned", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ung: Value = serde_json::from_str(&out).unwrap();
    let rows = ung
        .as_array()
        .or_else(|| ung["servers"].as_array())
        .cloned()
        .unwrap_or_default();
    assert!(!rows.is_empty(), "{ung:#}");
    assert!(
        rows.iter().all(|r| !want(r)),
        "--ungoverned lists a governed server: {ung:#}"
    );
    assert!(out.contains("https://mcp.sentry.dev/mcp"), "{out}");

    // Each client's wrapped entry, launched as that client would, is governed by the policy:
    // reading is allowed, writing is denied.
    let ann = &homes[0];
    let launches: [(&str, PathBuf, &str); 8] = [
        (
            "claude-desktop",
            ann.join(".config/Claude/claude_desktop_config.json"),
            "files",
        ),
        (
            "claude-extension",
            ann.join(".config/Claude/Claude Extensions/ant.dir.files/manifest.json"),
            "ant.dir.files",
        ),
        ("claude-code", ann.join(".claude.json"), "fs"),
        ("claude-code", ann.join("proj/.mcp.json"), "shared"),
        ("cursor", ann.join(".cursor/mcp.json"), "files"),
        ("vscode", ann.join(".config/Code/User/mcp.json"), "files"),
        (
            "windsurf",
            ann.join(".codeium/windsurf/mcp_config.json"),
            "files",
        ),
        ("codex", ann.join(".codex/config.toml"), "files"),
    ];
    for (i, (client, path, name)) in launches.iter().enumerate() {
        let (command, args) = launch_line(client, path, name, &work);
        assert!(command.ends_with("/thoth"), "{client}: {command}");
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--client" && w[1] == *client),
            "{client}: {args:?}"
        );
        let target = work.join(format!("b{i}.txt"));
        let run = mcp_client_exec(
            ClientOpts::default(),
            json!([
                {"op": "call", "tool": "read_text_file", "args": {"path": work.join("a.txt")}},
                {"op": "call", "tool": "write_file", "args": {"path": target, "content": "x"}},
            ]),
            &command,
            &args,
            &[],
        );
        assert_eq!(run.out[0]["isError"], false, "{client}: {run:?}");
        assert_eq!(run.out[1]["isError"], true, "{client}: {run:?}");
        assert!(!target.exists(), "{client}: the write went through");
    }

    // Unwrapping restores every file byte for byte.
    agent.stop();
    for (client, path, original) in &files {
        let (code, out, err) =
            thoth_cmd(&["unwrap-config", "--client", client, path.to_str().unwrap()]);
        assert_eq!(code, 0, "{client} {}: {out}{err}", path.display());
        assert_eq!(
            &std::fs::read_to_string(path).unwrap(),
            original,
            "{client}: {} not restored",
            path.display()
        );
    }
}

#[test]
fn claude_code_rewriting_its_file_every_few_milliseconds_loses_nothing_and_is_not_fought() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("home");
    let home = users.join("ann");
    let path = home.join(".claude.json");
    put(
        &path,
        "{\n  \"numStartups\": 0,\n  \"history\": [],\n  \"mcpServers\": {\"fs\": {\"type\": \"stdio\", \"command\": \"npx\", \"args\": [\"-y\", \"server-filesystem\"]}}\n}\n",
    );
    let agent = Agent::start_offline(dir.path(), &users, "");
    wait_secs("the first wrap", 20, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"--client\""))
    });
    // Claude Code saving its config every 3 ms for 4 s, adding a server part-way.
    let out = std::process::Command::new(python())
        .arg(py_script("claude_code_writer.py"))
        .args([path.to_str().unwrap(), "4", "3", "late", "/opt/late-mcp"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let writes = report["writes"].as_u64().unwrap();
    assert!(writes > 100, "the writer wrote only {writes} times");
    // The new server gets wrapped; nothing of the writer's is lost.
    wait_secs("the late server wrapped", 20, || {
        std::fs::read_to_string(&path).is_ok_and(|t| {
            serde_json::from_str::<Value>(&t)
                .is_ok_and(|v| v["mcpServers"]["late"]["args"][0] == "run")
        })
    });
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        v["numStartups"].as_u64(),
        Some(writes),
        "a save of Claude Code's was lost"
    );
    assert_eq!(v["history"].as_array().map(Vec::len), Some(writes as usize));
    assert_eq!(v["mcpServers"]["fs"]["args"][0], "run");
    // Not fought: the agent wrote twice (the first wrap, the late server), not once per save.
    let events: Vec<Value> = agent
        .status()
        .and_then(|s| s["recentEvents"].as_array().cloned())
        .unwrap_or_default();
    let config_events: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["eventType"]
                .as_str()
                .is_some_and(|t| t.starts_with("CONFIG_"))
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(".claude.json"))
        })
        .collect();
    assert!(
        (1..=4).contains(&config_events.len()),
        "the agent fought Claude Code: {config_events:#?}"
    );
    // Nothing left behind.
    let leftovers: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".thoth-tmp") || n.ends_with(".lock") || n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
