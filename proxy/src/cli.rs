//! The `thoth` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::framing::DEFAULT_MAX_MESSAGE_BYTES;

/// Thoth governs the tools AI assistants call: it sits between an MCP client (Claude Desktop)
/// and each MCP server, and checks every tool call against a signed or local policy.
#[derive(Debug, Parser)]
#[command(
    name = "thoth",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an MCP server behind the governance proxy (what Claude Desktop launches).
    ///
    /// Relays MCP messages between this process's stdin/stdout and the server's, unchanged,
    /// and decides every tools/call before the server sees it. A denied call gets an error
    /// result that tells the model which rule stopped it. Without a usable policy every tool
    /// call is denied (fail closed). Logs go to stderr; set THOTH_LOG=debug for more.
    ///
    /// Example, in claude_desktop_config.json:
    ///   "command": "/usr/local/bin/thoth",
    ///   "args": ["run", "--server", "files", "--",
    ///            "npx", "-y", "@modelcontextprotocol/server-filesystem", "/Users/ann/projects"]
    ///
    /// Policy comes from the agent (--agent-socket), else its last-known-good bundle
    /// (--state-dir), else --policy FILE; a new version from the agent applies from the next call.
    /// On a machine with an installed agent (its root-owned agent.toml or trust file), --policy,
    /// --agent-socket and --state-dir are ignored (the log says so): policy comes only from
    /// that agent. With LD_PRELOAD, LD_AUDIT, DYLD_* (or an LD_LIBRARY_PATH that loaded a library
    /// from a directory a user can write) in the environment, every tool call is denied.
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Check and try out policy documents.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with behavioral event files.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Is this laptop governed? The agent's state, the policy in force and its age, and which
    /// of your MCP servers (every MCP client: Claude Desktop and its extensions, Claude Code,
    /// Cursor, VS Code, Windsurf, Codex) run through thoth. Exit 0 when all is well, 1 if not.
    Status(StatusArgs),
    /// The same checks as `status`, as JSON for MDM health checks (exit 0 healthy, 1 not).
    Health(StatusArgs),
    /// Put thoth in front of every MCP server of an MCP client's config (by default this user's
    /// Claude Desktop config; `--client` picks another client, and without FILE all of its
    /// files for this user). Each stdio entry's command becomes
    /// `thoth run --server NAME --client HOST -- ORIGINAL…`; only `command` and `args` change:
    /// comments, key order, indentation and line endings are kept; remote servers (a URL) are
    /// left alone. A one-time backup is kept next to the file (FILE.thoth-backup). A file that
    /// does not parse is never changed: the error and its line and column are printed and the
    /// exit status is 1. The client must then pick the change up (the output says how).
    #[command(name = "wrap-config")]
    WrapConfig(ConfigArgs),
    /// Restore every wrapped entry's original command line (the inverse of wrap-config).
    #[command(name = "unwrap-config")]
    UnwrapConfig(ConfigArgs),
    /// Every MCP client found for this user, its config files, and each server: governed, not
    /// governed (and why), remote, or disabled. Exit 0, or 1 when a file cannot be read.
    Clients(ClientsArgs),
    /// A stand-in MCP server for `thoth run` when the real one cannot start (no Node.js for an
    /// extension): answers the client so each tool call is denied with the reason.
    #[command(name = "unavailable-server", hide = true)]
    UnavailableServer,
}

#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// Only this MCP client (claude-desktop, claude-extension, claude-code, cursor, vscode,
    /// windsurf, codex).
    #[arg(long, value_name = "HOST")]
    pub client: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// The agent's local socket (its thoth and wrapper options decide what "governed" is).
    #[arg(long, value_name = "PATH", env = "THOTH_AGENT_SOCKET",
          default_value = crate::source::DEFAULT_AGENT_SOCKET)]
    pub agent_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The config file [default: this user's files of the --client, on this OS].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The MCP client whose config this is: claude-desktop (the default without FILE),
    /// claude-extension (FILE is an extension's manifest.json), claude-code, cursor, vscode,
    /// windsurf, codex. With FILE and no --client, the client is guessed from the file's place.
    #[arg(long, value_name = "HOST")]
    pub client: Option<String>,
    /// Print the change as a diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The thoth binary entries should run (wrap only) [default: this program's absolute path].
    #[arg(long, value_name = "PATH")]
    pub thoth: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's local socket.
    #[arg(long, value_name = "PATH", env = "THOTH_AGENT_SOCKET",
          default_value = crate::source::DEFAULT_AGENT_SOCKET)]
    pub agent_socket: PathBuf,
    /// Check only this config file (with --client, or the client guessed from its place)
    /// [default: every MCP client's files of this user].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check only this MCP client's files (or, with --config, read FILE as its).
    #[arg(long, value_name = "HOST")]
    pub client: Option<String>,
    /// Deprecated: `--config FILE --client claude-desktop`.
    #[arg(long, value_name = "FILE", hide = true, conflicts_with_all = ["config", "client"])]
    pub claude_config: Option<PathBuf>,
    /// JSON output (always on for `health`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The server's name, as in claude_desktop_config.json; policy entries match on it.
    /// Default: derived from the command (e.g. "server-filesystem").
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
    /// Policy document (YAML or JSON), used only when neither the agent nor its last-known-good
    /// bundle is available.
    #[arg(long, value_name = "FILE", env = "THOTH_POLICY")]
    pub policy: Option<PathBuf>,
    /// The agent's local socket: the preferred source of policy (signed; verified here).
    #[arg(long, value_name = "PATH", env = "THOTH_AGENT_SOCKET",
          default_value = crate::source::DEFAULT_AGENT_SOCKET)]
    pub agent_socket: PathBuf,
    /// The agent's state directory: its trust file and last-known-good bundle (the fallback when
    /// the agent is unreachable).
    #[arg(long, value_name = "DIR", env = "THOTH_STATE_DIR",
          default_value = crate::source::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Append behavioral events (hash-chained JSON lines) to this file; created with mode 0600.
    #[arg(long, value_name = "FILE", env = "THOTH_EVENTS")]
    pub events: Option<PathBuf>,
    /// Largest single message accepted from either side, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = clap::value_parser!(usize))]
    pub max_message_bytes: usize,
    /// Longest arguments/result text kept in an event, in bytes (longer is cut and hashed).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    pub content_max_bytes: usize,
    /// The MCP client that launches this server (claude-desktop, claude-extension,
    /// claude-code, cursor, vscode, windsurf, codex; wrap-config writes it). Every event names
    /// it (clientName); without it, the name the client gives in its MCP `initialize` request
    /// is used. With claude-extension and a plain `node` command that is not on PATH, a Node.js
    /// runtime is looked for (well-known locations, then Claude's own binary run as Node with
    /// ELECTRON_RUN_AS_NODE=1); THOTH_LOG=debug says which was used.
    #[arg(long, value_name = "HOST", hide_short_help = true)]
    pub client: Option<String>,
    /// Set by wrap-config when the original entry had no "args" (so unwrapping restores it
    /// exactly); no effect on the proxy.
    #[arg(long, hide = true)]
    pub no_args: bool,
    /// Set by wrap-config when the original entry had no "command" (an extension manifest's
    /// platform override); no effect on the proxy.
    #[arg(long, hide = true)]
    pub no_command: bool,
    /// The MCP server's command and arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; prints each error with file, line and field. Exit 1 if any fail.
    Validate {
        /// Policy files (YAML or JSON).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show the decision a policy makes for one call, and the rule that makes it.
    ///
    /// Example:
    ///   thoth policy explain policy.yaml --server files \
    ///     --command "npx -y @modelcontextprotocol/server-filesystem /data" \
    ///     --tool write_file --args '{"path": "/data/x"}'
    #[command(verbatim_doc_comment)]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Server name.
    #[arg(long, value_name = "NAME")]
    pub server: String,
    /// The server's command line (split on spaces), for entries that match on `command`.
    #[arg(long, value_name = "CMDLINE", default_value = "")]
    pub command: String,
    /// Tool name.
    #[arg(long, value_name = "TOOL")]
    pub tool: String,
    /// Arguments as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    /// Tools called earlier in the session, in order (repeat the flag), to try sequence rules
    /// and progressive escalation. Each is recorded as the policy would have decided it.
    #[arg(long = "after", value_name = "TOOL")]
    pub after: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Check the hash chain(s) of an events file and its signed chain heads (CHAIN_HEAD
    /// records, exported by the controller); exit 1 and name the line at the first break.
    /// With --ca, exit 0 only if every event is covered by a signed head whose certificate
    /// chains to that CA and names its agent (3: intact but not all signed).
    Verify {
        /// Events file (JSON lines: `thoth run --events`, or a controller's SIEM file).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The controller's CA (PEM): the agents' certificates in signed heads must chain to it.
        #[arg(long, value_name = "CA.pem")]
        ca: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub use thoth_proto::stdout::quiet_on_closed_stdout;

/// Parses arguments and runs; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Policy(PolicyCommand::Validate { files }) => commands::policy::validate(&files),
        Command::Policy(PolicyCommand::Explain(args)) => commands::policy::explain(&args),
        Command::Events(EventsCommand::Verify { file, ca, json }) => {
            commands::events::verify(&file, ca.as_deref(), json)
        }
        Command::Status(args) => commands::status::status(&args, false),
        Command::Health(args) => commands::status::status(&args, true),
        Command::WrapConfig(args) => commands::config::run(&args, true),
        Command::UnwrapConfig(args) => commands::config::run(&args, false),
        Command::Clients(args) => commands::clients::run(&args),
        Command::UnavailableServer => commands::unavailable::run(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("thoth: {e:#}");
            2
        }
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("THOTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
