//! `thoth run`.

use thoth_proto::ContentLimits;

use crate::cli::RunArgs;
use crate::{self as proxy, RunConfig, source};

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.max_message_bytes < 1024 {
        anyhow::bail!("--max-message-bytes must be at least 1024");
    }
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| default_server_name(&args.command));
    let managed = source::managed();
    let sources = sources_for(&args, managed.as_ref(), &server);
    let mut refusal = loader_refusal();
    if let Some(why) = &refusal {
        tracing::error!("{why}");
    }
    let client = args.client.clone();
    // A Claude Desktop extension's plain `node`: find a runtime when none is on PATH.
    let mut argv = args.command.clone();
    let mut env = Vec::new();
    let runtime = crate::node::resolve(client.as_deref(), &argv, &crate::node::Search::from_env());
    match &runtime {
        crate::node::Runtime::AsIs => {}
        crate::node::Runtime::Missing => {
            eprintln!("thoth run: {}", crate::node::NO_RUNTIME);
            tracing::debug!("no node on PATH, at the well-known locations, or from Claude");
            refusal.get_or_insert_with(|| crate::node::NO_RUNTIME.to_owned());
            // A stand-in server answers the client, so each tool call gets the denial.
            argv = vec![
                std::env::current_exe()?.display().to_string(),
                "unavailable-server".into(),
            ];
        }
        r => {
            let (program, vars) = r.program().expect("a runtime");
            match r {
                crate::node::Runtime::ClaudeAsNode(_) => tracing::debug!(
                    program = %program.display(),
                    "no node on PATH or at the well-known locations: running the server with \
                     Claude's own binary as Node (ELECTRON_RUN_AS_NODE=1)"
                ),
                _ => tracing::debug!(
                    program = %program.display(),
                    "no node on PATH: running the server with the Node.js found here"
                ),
            }
            argv[0] = program.display().to_string();
            env.extend(vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())));
        }
    }
    let agent_events = match &managed {
        // Managed: events always go to the agent (the forwarder retries while it is down).
        Some(_) => Some(sources.agent_socket.clone()),
        // Events go to the agent when it is running, and also when it is installed but down
        // (restarting, upgrading): the forwarder retries, and keeps at exit what it could not
        // deliver for the next proxy. A machine without an agent sends none.
        None => (sources.agent_socket.exists() || sources.state_dir.join("trust.json").exists())
            .then(|| sources.agent_socket.clone()),
    };
    let policy = source::start(sources);
    // Event privacy comes from the policy in force at start (a later version applies to proxies
    // started after it), else from --content-max-bytes.
    let mut content = ContentLimits {
        max_bytes: args.content_max_bytes.max(64),
        ..ContentLimits::default()
    };
    if let proxy::policy::PolicyState::Loaded(p) = policy.get() {
        let ev = &p.policy.defaults.events;
        if let Some(max) = ev.content_max_bytes {
            content.max_bytes = max;
        }
        if !ev.redact_keys.is_empty() {
            let words: Vec<String> = ev
                .redact_keys
                .iter()
                .map(|k| thoth_proto::content::fold(k))
                .collect();
            // Set once for the life of this process.
            content.extra_secret_keys = Box::leak(words.into_boxed_slice());
        }
    }
    proxy::run(RunConfig {
        server_name: server,
        argv,
        policy,
        events: args.events,
        max_message_bytes: args.max_message_bytes,
        agent_events,
        content,
        refusal,
        client,
        env,
        original_argv: Some(args.command.clone()),
    })
}

/// Where the policy comes from. On a machine with an installed agent (managed), only from the
/// agent and its state directory: `--policy`, `--agent-socket` and `--state-dir` (and their
/// environment variables) are ignored, and the log says so.
fn sources_for(args: &RunArgs, managed: Option<&source::Managed>, server: &str) -> source::Sources {
    let mut src = source::Sources {
        agent_socket: args.agent_socket.clone(),
        state_dir: args.state_dir.clone(),
        policy_file: args.policy.clone(),
        server: server.to_owned(),
        argv: args.command.clone(),
    };
    if let Some(m) = managed {
        let mut ignored = Vec::new();
        if let Some(p) = src.policy_file.take() {
            ignored.push(format!("--policy {}", p.display()));
        }
        if src.agent_socket != m.socket {
            ignored.push(format!("--agent-socket {}", src.agent_socket.display()));
        }
        if src.state_dir != m.state_dir {
            ignored.push(format!("--state-dir {}", src.state_dir.display()));
        }
        src.agent_socket = m.socket.clone();
        src.state_dir = m.state_dir.clone();
        if ignored.is_empty() {
            tracing::debug!(evidence = %m.evidence.display(), "managed by the installed agent");
        } else {
            tracing::warn!(
                evidence = %m.evidence.display(),
                "this machine is managed by an installed Thoth agent: ignoring {} (policy comes \
                 only from the agent at {} and its state in {})",
                ignored.join(", "),
                m.socket.display(),
                m.state_dir.display()
            );
        }
    }
    src
}

/// Why the proxy refuses to govern: dynamic loader variables in its environment can run other
/// code inside this process (a fake clock, a hooked `write`), so no decision it makes could be
/// trusted. The proxy still runs, and denies every call saying why (fail closed, with events).
fn loader_refusal() -> Option<String> {
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.to_str()?;
            (thoth_hosts::wrapper::is_loader_variable(k) && !v.is_empty()).then(|| k.to_owned())
        })
        .filter(|k| k != "LD_LIBRARY_PATH" || library_path_used())
        .collect();
    (!vars.is_empty()).then(|| {
        format!(
            "thoth run refuses to govern with {} set in its environment (they make the loader \
             run other code inside the proxy); remove them from the MCP server's entry",
            vars.join(", ")
        )
    })
}

/// Whether `LD_LIBRARY_PATH` may have changed what this process loaded: some mapped library
/// comes from one of its directories that is not root-owned (a user could have put it there).
/// Test runners set it to directories holding none of our libraries; it is harmless then.
/// Where this cannot be checked, it counts as used.
fn library_path_used() -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(dirs) = std::env::var_os("LD_LIBRARY_PATH") else {
            return false;
        };
        let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&dirs)
            .map(|d| {
                // An empty entry means the working directory.
                let d = if d.as_os_str().is_empty() {
                    ".".into()
                } else {
                    d
                };
                std::fs::canonicalize(&d).unwrap_or(d)
            })
            .filter(|d| !thoth_endpoint::state::root_owned(d))
            .collect();
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return true;
        };
        let exe = std::env::current_exe().ok();
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with('/'))
            .filter(|p| exe.as_deref() != Some(std::path::Path::new(p)))
            .any(|p| {
                let p = std::path::Path::new(p);
                let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                real.parent()
                    .is_some_and(|parent| dirs.iter().any(|d| d == parent))
                    || p.parent()
                        .is_some_and(|parent| dirs.iter().any(|d| d == parent))
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

/// A name for a server started without `--server`: the package or script it runs.
/// `npx -y @modelcontextprotocol/server-filesystem@1.0 /d` → `server-filesystem`.
pub fn default_server_name(argv: &[String]) -> String {
    const LAUNCHERS: [&str; 8] = [
        "npx", "node", "uvx", "uv", "python", "python3", "bunx", "deno",
    ];
    let base = |s: &str| -> String {
        let s = s.rsplit(['/', '\\']).next().unwrap_or(s);
        let s = match s.rfind('@') {
            Some(i) if i > 0 => &s[..i],
            _ => s,
        };
        s.trim_end_matches(".exe").to_owned()
    };
    let program = argv.first().map(|p| base(p)).unwrap_or_default();
    if LAUNCHERS.contains(&program.as_str())
        && let Some(arg) = argv[1..]
            .iter()
            .find(|a| !a.starts_with('-') && *a != "run")
    {
        return base(arg);
    }
    if program.is_empty() {
        "mcp-server".into()
    } else {
        program
    }
}

#[cfg(test)]
mod tests {
    use super::default_server_name;

    fn name(v: &[&str]) -> String {
        default_server_name(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn names_come_from_the_package_or_program() {
        assert_eq!(
            name(&[
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem@1.0",
                "/d"
            ]),
            "server-filesystem"
        );
        assert_eq!(name(&["/usr/local/bin/mcp-github"]), "mcp-github");
        assert_eq!(name(&["python3", "-u", "notes.py"]), "notes.py");
        assert_eq!(name(&["uvx", "mcp-server-fetch"]), "mcp-server-fetch");
    }
}
