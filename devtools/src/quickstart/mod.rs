//! `thoth-quickstart`: the whole fleet on this machine, in a temp directory, narrated
//! step by step — a controller, an agent installed into a sandbox laptop by `thoth-installer`,
//! a user's Claude Desktop config wrapped by the agent, a policy push, one allowed and one
//! blocked tool call made exactly as Claude Desktop would make them, and the events arriving in
//! a JSON lines SIEM file and in `thothctl events query`.

mod mcp;
mod runner;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use runner::Failure;
use runner::{Run, STEPS};

/// The policy the quickstart pushes (shipped in `policy/examples/`).
const POLICY: &str = include_str!("../../../policy/examples/read-only-files-strict.yaml");
const POLICY_NAME: &str = "read-only-files-strict.yaml";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Options.
pub struct Options {
    /// Work here instead of a new temp directory (must be empty or absent).
    pub dir: Option<PathBuf>,
    /// Stop everything at the end instead of leaving the fleet running.
    pub once: bool,
    /// Keep the directory after `--once`.
    pub keep: bool,
    /// The filesystem MCP server command (whitespace-separated), if not found by itself.
    pub mcp_server: Option<String>,
}

/// Where the filesystem MCP server is: `tests/node_modules/.bin` of this checkout (what
/// `scripts/setup-peers` installs), or `node_modules/.bin` here.
fn find_fs_server(bins: &Path) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let mut bases: Vec<PathBuf> = cwd.into_iter().collect();
    bases.extend(bins.ancestors().map(Path::to_path_buf));
    for base in bases {
        for rel in [
            "tests/node_modules/.bin/mcp-server-filesystem",
            "node_modules/.bin/mcp-server-filesystem",
        ] {
            let p = base.join(rel);
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs the quickstart. Prints as it goes.
pub fn run(opts: Options) -> Result<(), Failure> {
    let started = Instant::now();
    let bins = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let pre = |reason: String| Failure {
        step: "setup".into(),
        reason,
    };
    for name in [
        "thoth-controller",
        "thothctl",
        "thoth-installer",
        "thoth-agent",
        "thoth",
    ] {
        let p = bins.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if !p.exists() {
            return Err(pre(format!(
                "{} is missing: build the workspace first (cargo build --release --workspace --bins)",
                p.display()
            )));
        }
    }
    let server: Vec<String> = match &opts.mcp_server {
        Some(cmd) => cmd.split_whitespace().map(str::to_owned).collect(),
        None => vec![find_fs_server(&bins)
            .ok_or_else(|| {
                pre("the filesystem MCP server is not installed: run scripts/setup-peers, or pass --mcp-server 'npx -y @modelcontextprotocol/server-filesystem'".into())
            })?
            .display()
            .to_string()],
    };
    if server.is_empty() {
        return Err(pre("--mcp-server is empty".into()));
    }
    let dir = match &opts.dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .map(|mut r| r.next().is_some())
                    .unwrap_or(true)
            {
                return Err(pre(format!("{} is not empty", d.display())));
            }
            std::fs::create_dir_all(d).map_err(|e| pre(format!("{}: {e}", d.display())))?;
            d.clone()
        }
        None => tempfile::Builder::new()
            .prefix("thoth-quickstart-")
            .tempdir()
            .map_err(|e| pre(format!("cannot make a temp directory: {e}")))?
            .keep(),
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    let mut r = Run {
        dir: dir.clone(),
        bins,
        step: 0,
        title: "",
        started,
        step_started: started,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        controller: None,
        agent: None,
        extra_logs: Vec::new(),
    };
    println!("Thoth quickstart: a controller, a laptop with the agent, Claude Desktop's config,");
    println!("a policy, two tool calls and their events, all on this machine, in");
    println!("  $QS = {}", dir.display());
    let result = flow(&mut r, &server);
    match result {
        Ok(()) => {
            let total = r.started.elapsed().as_secs_f64();
            if opts.once {
                if let Some(mut a) = r.agent.take() {
                    a.stop();
                }
                if let Some(mut c) = r.controller.take() {
                    c.stop();
                }
                println!("\nAll {STEPS} steps passed in {total:.1} s; the fleet is stopped.");
                if opts.keep || opts.dir.is_some() {
                    println!("The sandbox is kept in {}.", dir.display());
                } else {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Ok(());
            }
            next_steps(&r, total);
            // Until Ctrl-C or SIGTERM; then the agent and the controller are stopped cleanly.
            wait_for_signal();
            println!("\nstopping the agent and the controller…");
            if let Some(mut a) = r.agent.take() {
                a.stop();
            }
            if let Some(mut c) = r.controller.take() {
                c.stop();
            }
            println!("stopped; the sandbox stays in {}", dir.display());
            Ok(())
        }
        Err(f) => {
            println!("\nThe sandbox is kept for a look: {}", dir.display());
            Err(f)
        }
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // If a handler cannot be set, that signal keeps its default action (it ends us).
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn next_steps(r: &Run, total: f64) {
    let d = r.dir.display();
    println!(
        "\nAll {STEPS} steps passed in {total:.1} s. The controller and the agent keep running."
    );
    println!("In another terminal:");
    println!(
        "  export PATH={}:$PATH THOTHCTL_CREDENTIALS={d}/controller/admin",
        r.bins.display()
    );
    println!("  thothctl agents list              # the laptop: inventory, applied policy version");
    println!(
        "  thothctl events query             # every event so far (thothctl events tail: live)"
    );
    println!("  thothctl policy push policy/examples/read-only-files.yaml");
    println!("                                    # progressive: watch agents list show version 2");
    println!(
        "  thothctl policy rollback 1        # back to the strict read-only document, as version 3"
    );
    println!("  tail -f {d}/siem/events.jsonl   # what a SIEM receives");
    println!("  vi {d}/laptop/home/alex/.config/Claude/claude_desktop_config.json");
    println!("                                    # remove the wrapper: the agent puts it back");
    println!("  thoth-installer status --prefix {d}/laptop");
    println!("  thoth-installer uninstall --prefix {d}/laptop   # alex's config back as it was");
    println!("Ctrl-C here stops the controller and the agent (the sandbox stays in {d}).");
}

fn flow(r: &mut Run, server: &[String]) -> Result<(), Failure> {
    let dir = r.dir.clone();
    let data = dir.join("controller");
    let sink = dir.join("siem/events.jsonl");
    let laptop = dir.join("laptop");
    let home = laptop.join("home/alex");
    let docs = home.join("Documents");
    let config = home.join(".config/Claude/claude_desktop_config.json");

    // 1. The controller.
    r.step("Start the controller (SQLite store, a JSON lines SIEM sink)");
    let init = Command::new(r.bin("thoth-controller"))
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .map_err(|e| r.fail(e.to_string()))?;
    if !init.status.success() {
        return Err(r.fail(String::from_utf8_lossy(&init.stderr).into_owned()));
    }
    let toml = format!(
        "# quickstart: events go to a JSON lines file, as a SIEM would collect them\n[[sinks]]\nname = \"siem-file\"\nkind = \"jsonl\"\npath = {}\n",
        toml::Value::String(sink.display().to_string())
    );
    std::fs::write(data.join("controller.toml"), toml).map_err(|e| r.fail(e.to_string()))?;
    let data_s = data.display().to_string();
    let serve = [
        "serve",
        "--data",
        &data_s,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "off",
    ];
    r.controller = Some(r.spawn(
        "controller",
        (&r.bin("thoth-controller"), "thoth-controller"),
        &serve,
        dir.join("controller.log"),
    )?);
    let url_file = data.join("admin/controller.url");
    let url = r.wait("the controller to listen", || {
        std::fs::read_to_string(&url_file)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })?;
    r.ok(format!(
        "serving on {url}; events go to $QS/siem/events.jsonl"
    ));

    // 2. A token, and what agents pin.
    r.step("Create an enrollment token and read what agents must pin");
    let out = r.thothctl(&[
        "--json",
        "token",
        "create",
        "--uses",
        "1",
        "--ttl",
        "1h",
        "--label",
        "site=quickstart",
    ])?;
    let token = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_owned))
        .ok_or_else(|| r.fail(format!("thothctl token create --json printed {out:?}")))?;
    let token_file = dir.join("enrollment-token");
    write_private(&token_file, &token).map_err(|e| r.fail(e.to_string()))?;
    let (_, info) = r.run(
        "thoth-controller",
        &["info", "--json", "--data", &data_s],
        &["info", "--json", "--data", &data_s],
    )?;
    let info: Value = serde_json::from_str(&info).map_err(|e| r.fail(e.to_string()))?;
    let fp = info["caFingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let root_key = info["rootPublicKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    r.ok(format!(
        "token for one enrollment, valid 1 h (saved 0600 in $QS/enrollment-token; the controller keeps only its hash); CA {}…",
        &fp[..fp.len().min(23)]
    ));

    // 3. A user with Claude Desktop on the laptop.
    r.step("A laptop user, alex, whose Claude Desktop runs the filesystem MCP server");
    std::fs::create_dir_all(&docs).map_err(|e| r.fail(e.to_string()))?;
    std::fs::write(
        docs.join("notes.txt"),
        "Quarterly numbers are in the shared drive.\n",
    )
    .map_err(|e| r.fail(e.to_string()))?;
    let original = serde_json::to_string_pretty(&json!({
        "mcpServers": {
            "files": {
                "command": server[0],
                "args": server[1..].iter().cloned().chain([docs.display().to_string()]).collect::<Vec<_>>(),
            }
        },
        "globalShortcut": "Ctrl+Space"
    }))
    .map_err(|e| r.fail(e.to_string()))?
        + "\n";
    std::fs::create_dir_all(config.parent().expect("has a parent"))
        .map_err(|e| r.fail(e.to_string()))?;
    std::fs::write(&config, &original).map_err(|e| r.fail(e.to_string()))?;
    r.ok(format!(
        "$QS/laptop/home/alex/.config/Claude/claude_desktop_config.json: \"files\" runs {}",
        server.join(" ")
    ));

    // 4. The installer.
    r.step("Install the agent on the laptop with thoth-installer (what MDM runs)");
    let laptop_s = laptop.display().to_string();
    let token_s = token_file.display().to_string();
    let bins_s = r.bins.display().to_string();
    let args = [
        "install",
        "--prefix",
        &laptop_s,
        "--no-start",
        "--controller",
        &url,
        "--tenant",
        "default",
        "--enroll-token-file",
        &token_s,
        "--ca-fingerprint",
        &fp,
        "--root-key",
        &root_key,
        "--labels",
        "team=finance",
        "--from",
        &bins_s,
    ];
    let (code, _) = r.run("thoth-installer", &args, &args)?;
    if code != 0 {
        return Err(r.fail(format!(
            "the installer could not reach the controller at {url} (exit {code})"
        )));
    }
    r.ok("installed under $QS/laptop: binaries, agent.toml, the token (0600), the service definition; the controller answered with the pinned CA");

    // 5. The agent.
    r.step("Start the agent (as systemd would) and watch it enroll and wrap the config");
    let agent_toml = laptop.join("etc/thoth/agent.toml");
    let agent_bin = laptop.join("usr/local/bin/thoth-agent");
    let agent_toml_s = agent_toml.display().to_string();
    r.agent = Some(r.spawn(
        "agent",
        (&agent_bin, "$QS/laptop/usr/local/bin/thoth-agent"),
        &["run", "--config", &agent_toml_s],
        dir.join("agent.log"),
    )?);
    let identity = laptop.join("var/lib/thoth/identity/agent.json");
    let agent_id = r.wait("the agent to enroll", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&identity).ok()?).ok()?;
        v["agentId"].as_str().map(str::to_owned)
    })?;
    r.ok(format!(
        "enrolled as agent {agent_id} (its key never left the laptop)"
    ));
    let thoth = laptop.join("usr/local/bin/thoth").display().to_string();
    let entry = r.wait("the agent to wrap alex's config", || {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&config).ok()?).ok()?;
        let e = v["mcpServers"]["files"].clone();
        (e["command"].as_str() == Some(thoth.as_str())).then_some(e)
    })?;
    let args_shown: Vec<String> = entry["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .map(|s| s.replace(&dir.display().to_string(), "$QS"))
                .collect()
        })
        .unwrap_or_default();
    r.ok(format!(
        "config wrapped: \"files\" now runs $QS/laptop/usr/local/bin/thoth {}",
        args_shown.join(" ")
    ));
    r.say("(only command and args changed; every other byte of the file is as alex left it)");

    // 6. The policy.
    r.step("Push the read-only example policy (policy/examples/read-only-files-strict.yaml)");
    let policy = dir.join(POLICY_NAME);
    std::fs::write(&policy, POLICY).map_err(|e| r.fail(e.to_string()))?;
    let policy_s = policy.display().to_string();
    let out = r.thothctl(&["--json", "policy", "push", &policy_s])?;
    let version = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v["version"].as_u64())
        .ok_or_else(|| r.fail(format!("policy push printed {out:?}")))?;
    let pushed = Instant::now();
    let creds = data.join("admin");
    let ctl = r.bin("thothctl");
    r.wait("the agent to apply the policy", || {
        let out = Command::new(&ctl)
            .arg("--credentials")
            .arg(&creds)
            .args(["--json", "agents", "list"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .any(|a| {
                a["agentId"].as_str() == Some(agent_id.as_str())
                    && a["appliedVersion"].as_u64() == Some(version)
            })
            .then_some(())
    })?;
    r.ok(format!(
        "version {version} signed and pushed; the agent verified and applied it {:.2} s later",
        pushed.elapsed().as_secs_f64()
    ));

    // 7. Claude Desktop's part.
    r.step("Act as Claude Desktop: launch \"files\" from the rewritten config, call two tools");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&config).map_err(|e| r.fail(e.to_string()))?)
            .map_err(|e| r.fail(e.to_string()))?;
    let e = &v["mcpServers"]["files"];
    let command = e["command"].as_str().unwrap_or_default().to_owned();
    let args: Vec<String> = e["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let env: Vec<(String, String)> = e["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    // alex's session: its own home, so nothing of this machine's user (say, events a real
    // proxy kept for later in ~/.local/state/thoth) is touched.
    let mut env = env;
    for (k, v) in [
        ("HOME", home.clone()),
        ("XDG_STATE_HOME", home.join(".local/state")),
    ] {
        if !env.iter().any(|(name, _)| name == k) {
            env.push((k.to_owned(), v.display().to_string()));
        }
    }
    r.extra_logs.push(dir.join("proxy.log"));
    let proxy_log =
        std::fs::File::create(dir.join("proxy.log")).map_err(|e| r.fail(e.to_string()))?;
    let mut session =
        mcp::Session::launch(&command, &args, &env, Stdio::from(proxy_log), CALL_TIMEOUT)
            .map_err(|e| r.fail(format!("{e}; see $QS/proxy.log")))?;
    let notes = docs.join("notes.txt");
    let read = session
        .call("read_text_file", json!({"path": notes}), CALL_TIMEOUT)
        .map_err(|e| r.fail(e.to_string()))?;
    if read.is_error {
        return Err(r.fail(format!("the read was refused: {}", read.text)));
    }
    r.say(format!(
        "read_text_file notes.txt  → allowed: {:?}",
        read.text.trim()
    ));
    let write = session
        .call(
            "write_file",
            json!({"path": notes, "content": "overwritten by the assistant"}),
            CALL_TIMEOUT,
        )
        .map_err(|e| r.fail(e.to_string()))?;
    if !write.is_error {
        return Err(r.fail(format!("the write was not blocked: {}", write.text)));
    }
    r.say(format!(
        "write_file notes.txt      → BLOCKED: {:?}",
        first_line(&write.text)
    ));
    let now = std::fs::read_to_string(&notes).unwrap_or_default();
    if now != "Quarterly numbers are in the shared drive.\n" {
        return Err(r.fail("notes.txt changed: the blocked write reached the server"));
    }
    r.ok("the blocked write never reached the server: notes.txt is unchanged");

    // 8. The events.
    r.step("See the events in the SIEM file and in the controller");
    let mut seen = String::from("no file yet");
    let found = r.wait("both calls' events in the SIEM file", || {
        let text = std::fs::read_to_string(&sink).ok()?;
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        seen = format!(
            "{} event(s): {}",
            events.len(),
            events
                .iter()
                .map(|e| format!(
                    "{} {}",
                    e["eventType"].as_str().unwrap_or("?"),
                    e["toolName"].as_str().unwrap_or("")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let pick = |tool: &str, action: &str| {
            events
                .iter()
                .find(|e| {
                    e["eventType"] == "TOOL_CALL_PRE"
                        && e["toolName"] == tool
                        && e["decision"]["action"] == action
                })
                .cloned()
        };
        Some((
            pick("read_text_file", "allow")?,
            pick("write_file", "deny")?,
            events.len(),
        ))
    });
    let found = found.map_err(|mut f| {
        f.reason
            .push_str(&format!("\n      the SIEM file had {seen}"));
        f
    })?;
    // The server ran on meanwhile, as under Claude Desktop; now the session ends.
    session.close(Duration::from_secs(5));
    let (allowed, denied, n) = found;
    for e in [&allowed, &denied] {
        r.say(format!(
            "{}  {:<13} {:<15} {:<6} seq {} by {}",
            e["timestamp"].as_str().unwrap_or(""),
            e["eventType"].as_str().unwrap_or(""),
            e["toolName"].as_str().unwrap_or(""),
            e["decision"]["action"].as_str().unwrap_or(""),
            e["seq"],
            e["user"].as_str().or(e["osUser"].as_str()).unwrap_or("-"),
        ));
    }
    r.ok(format!("{n} events in $QS/siem/events.jsonl"));
    let sink_s = sink.display().to_string();
    let thoth_bin = laptop.join("usr/local/bin/thoth");
    let ca_s = data.join("ca.crt").display().to_string();
    r.show("thoth", &["events", "verify", &sink_s, "--ca", &ca_s]);
    let verify = Command::new(&thoth_bin)
        .args(["events", "verify", &sink_s, "--ca", &ca_s])
        .output()
        .map_err(|e| r.fail(e.to_string()))?;
    if !verify.status.success() {
        return Err(r.fail(format!(
            "the SIEM file's hash chain and signed heads do not verify: {} {}",
            String::from_utf8_lossy(&verify.stdout).trim(),
            String::from_utf8_lossy(&verify.stderr).trim()
        )));
    }
    r.say(first_line(&String::from_utf8_lossy(&verify.stdout)));
    let table = r.thothctl(&["events", "query", "--type", "TOOL_CALL_PRE", "--limit", "5"])?;
    for line in table.lines() {
        r.say(line);
    }
    r.ok("the hash chain and the agent's signed heads verify end to end against the CA, and the controller has the same events");
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

/// A file that cannot be written ([`write_private`]).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct WriteError {
    path: PathBuf,
    source: std::io::Error,
}

fn write_private(path: &Path, text: &str) -> Result<(), WriteError> {
    let failed = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(failed)?;
    f.write_all(format!("{text}\n").as_bytes()).map_err(failed)
}
