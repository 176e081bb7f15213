//! `thoth run`.

use thoth_proto::ContentLimits;

use crate::cli::RunArgs;
use crate::proxy::{self, RunConfig, source};

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.max_message_bytes < 1024 {
        anyhow::bail!("--max-message-bytes must be at least 1024");
    }
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| default_server_name(&args.command));
    let policy = source::start(source::Sources {
        agent_socket: args.agent_socket.clone(),
        state_dir: args.state_dir.clone(),
        policy_file: args.policy.clone(),
        server: server.clone(),
        argv: args.command.clone(),
    });
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
        argv: args.command,
        policy,
        events: args.events,
        max_message_bytes: args.max_message_bytes,
        // Events go to the agent when it is running, and also when it is installed but down
        // (restarting, upgrading): the forwarder retries, and keeps at exit what it could not
        // deliver for the next proxy. A machine without an agent sends none.
        agent_events: (args.agent_socket.exists() || args.state_dir.join("trust.json").exists())
            .then(|| args.agent_socket.clone()),
        content,
    })
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
