//! `thoth-quickstart`: see `thoth-quickstart --help`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

/// See the whole fleet work on this machine in a few seconds: starts a controller, installs an
/// agent into a sandbox laptop with thoth-installer, lets it wrap a user's Claude Desktop
/// config, pushes the read-only example policy, makes one allowed and one blocked tool call
/// exactly as Claude Desktop would, and shows the events in a JSON lines SIEM file and in
/// `thothctl events query`. Everything lives in a temp directory; nothing is installed on this
/// machine. Leaves the fleet running for you to try things (Ctrl-C stops it), or stops with
/// --once. Runs the binaries next to it (build the workspace first: cargo build --workspace
/// --bins). Needs the filesystem MCP server (scripts/setup-peers installs it).
///
///   thoth-quickstart --once
#[derive(Parser)]
#[command(name = "thoth-quickstart", version, verbatim_doc_comment)]
struct Cli {
    /// Stop everything at the end (and remove the temp directory) instead of leaving the
    /// fleet running.
    #[arg(long)]
    once: bool,
    /// Work in this directory (empty or absent) instead of a new temp directory; it is kept.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temp directory after --once.
    #[arg(long)]
    keep: bool,
    /// The filesystem MCP server to launch [default: tests/node_modules/.bin/mcp-server-filesystem
    /// of this checkout], e.g. 'npx -y @modelcontextprotocol/server-filesystem'.
    #[arg(long, value_name = "COMMAND")]
    mcp_server: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    thoth_proto::stdout::quiet_on_closed_stdout();
    let run = thoth_devtools::quickstart::run(thoth_devtools::quickstart::Options {
        dir: cli.dir,
        once: cli.once,
        keep: cli.keep,
        mcp_server: cli.mcp_server,
    });
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(f) => {
            eprintln!(
                "thoth-quickstart: error: quickstart {} failed: {}",
                f.step, f.reason
            );
            std::process::ExitCode::FAILURE
        }
    }
}
