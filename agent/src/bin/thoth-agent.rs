//! `thoth-agent`: see `thoth-agent --help`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use thoth_agent::daemon;
use thoth_endpoint::config::AgentConfig;

/// The Thoth agent: runs on each laptop (installed by MDM). It enrolls with the controller, keeps
/// the signed policy current (and enforceable offline, from its last-known-good copy), serves it
/// to every proxy (`thoth run`) on a local socket, and reports status and inventory.
///
///   thoth-agent run --config /etc/thoth/agent.toml
///   thoth-agent status            # identity, connection, policy version and age, last error
///
/// Exit status of `status`: 0 healthy, 1 running with a problem, 3 not running.
#[derive(Parser)]
#[command(name = "thoth-agent", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground (the service manager runs this). Stops on SIGINT/SIGTERM.
    Run {
        /// Settings file (see agent/thoth-agent.example.toml).
        #[arg(long, value_name = "FILE", default_value = "/etc/thoth/agent.toml")]
        config: PathBuf,
    },
    /// Show the running agent's state.
    Status {
        /// Settings file, to find the socket and state directory.
        #[arg(long, value_name = "FILE", default_value = "/etc/thoth/agent.toml")]
        config: PathBuf,
        /// Socket path (overrides the one in the settings file).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a settings file and print what it resolves to.
    CheckConfig {
        /// Settings file.
        #[arg(long, value_name = "FILE", default_value = "/etc/thoth/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    thoth_proto::stdout::quiet_on_closed_stdout();
    let filter = tracing_subscriber::EnvFilter::try_from_env("THOTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    match cli.command {
        Command::Run { config } => {
            let config = match AgentConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("thoth-agent: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = thoth_agent::watch::config_filter(&config) {
                eprintln!("thoth-agent: {e}");
                return ExitCode::from(2);
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("thoth-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(daemon::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("thoth-agent: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status {
            config,
            socket,
            json,
        } => {
            let loaded = AgentConfig::load(&config);
            let socket = match (&socket, &loaded) {
                (Some(s), _) => s.clone(),
                (None, Ok(c)) => c.socket_path.clone(),
                (None, Err(e)) => {
                    eprintln!("thoth-agent: {e}\n  hint: pass --socket PATH or --config FILE");
                    return ExitCode::from(2);
                }
            };
            match thoth_endpoint::ipc::fetch_status(&socket) {
                Ok(status) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&status).expect("status serializes")
                        );
                    } else {
                        print!("{}", status.render_text());
                    }
                    // A stalled event upload or a spool that cannot write is a problem.
                    let healthy = status.connected
                        && status.policy.as_ref().is_some_and(|p| !p.stale)
                        && !status.revoked
                        && status.events.error.is_none();
                    if healthy {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(why) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"running": false, "error": why.to_string()})
                        );
                    } else {
                        eprintln!("thoth-agent is not running: {why}");
                        if let Ok(c) = &loaded {
                            let path = c.state_dir.join("status.json");
                            if path.exists() {
                                eprintln!("its last recorded status is in {}", path.display());
                            }
                        }
                        eprintln!(
                            "  hint: start it with your service manager, or `thoth-agent run --config FILE`"
                        );
                    }
                    ExitCode::from(3)
                }
            }
        }
        Command::CheckConfig { config } => match AgentConfig::load(&config) {
            Ok(c) if thoth_agent::watch::config_filter(&c).is_err() => {
                if let Err(e) = thoth_agent::watch::config_filter(&c) {
                    eprintln!("thoth-agent: {}: {e}", config.display());
                }
                ExitCode::from(2)
            }
            Ok(c) => {
                println!("{}: ok", config.display());
                println!("controller   {}", c.controller_url);
                println!("tenant       {}", c.tenant);
                println!("state dir    {}", c.state_dir.display());
                println!("socket       {}", c.socket_path.display());
                println!(
                    "enrollment   {}",
                    match c.token() {
                        Ok(Some(_)) => "token configured".to_owned(),
                        Ok(None) => "no token (fine once enrolled)".to_owned(),
                        Err(e) => e.to_string(),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("thoth-agent: {e}");
                ExitCode::from(2)
            }
        },
    }
}
