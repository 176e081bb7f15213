//! `thoth-controller`: see `thoth-controller --help`.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use thoth_controller::datadir::{self, DataDir};
use thoth_controller::pki::{self, Identity, Role};
use thoth_controller::server;

/// The Thoth fleet controller: it signs and serves policy bundles to enrolled agents over gRPC
/// (TLS 1.3, mutual TLS), issues their identities, and keeps the audit log.
///
/// See everything work first (a controller, an agent, a policy, tool calls, events; in a temp
/// directory):
///
///   thoth-quickstart --once        # crate thoth-devtools
///
/// A controller on one machine:
///
///   thoth-controller serve                       # creates ~/.local/share/thoth-controller
///   thothctl policy push policy/examples/read-only-files.yaml
///   thothctl policy history
#[derive(Parser)]
#[command(name = "thoth-controller", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: CA, server certificate, root and signing keys, the first admin
    /// credential for thothctl (in DATA/admin), and a commented controller.toml.
    Init {
        /// Data directory [default: $THOTH_CONTROLLER_DATA, else ~/.local/share/thoth-controller]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// A DNS name or IP address agents will use to reach this controller (repeatable); the
        /// defaults are localhost, 127.0.0.1 and ::1.
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<String>,
    },
    /// Run the controller (initializing the data directory first if it is new). Stops cleanly on
    /// SIGINT or SIGTERM.
    Serve {
        /// Data directory [default: $THOTH_CONTROLLER_DATA, else ~/.local/share/thoth-controller]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// gRPC listen address, overriding controller.toml (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Metrics listen address, or "off", overriding controller.toml.
        #[arg(long, value_name = "ADDR|off")]
        metrics_listen: Option<String>,
    },
    /// Issue another admin credential (ca.crt, client.crt, client.key) for thothctl.
    IssueAdmin {
        /// Data directory of the controller whose CA signs it.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Who it is for (shown in the audit log).
        #[arg(long)]
        name: String,
        /// viewer (read), approver (read, approve), operator (read, push, tokens, revoke) or admin (all).
        #[arg(long)]
        role: String,
        /// Limit it to one tenant (default: all tenants).
        #[arg(long)]
        tenant: Option<String>,
        /// Directory to write the credential into (created).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print what agents need to trust this controller: the CA fingerprint and the root key.
    Info {
        /// Data directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("THOTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn print_trust(dir: &Path, fingerprint: &str, root: &str) {
    println!("data directory:      {}", dir.display());
    println!("CA fingerprint:      {fingerprint}");
    println!("root public key:     {root}");
    println!("admin credential:    {}", dir.join("admin").display());
    println!("(agents are installed with --ca-fingerprint and --root-key set to these values)");
}

fn raise_fd_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        // `None` is unlimited.
        if lim.current.is_some() && (lim.maximum.is_none() || lim.current < lim.maximum) {
            lim.current = lim.maximum;
            let _ = setrlimit(Resource::Nofile, lim);
        }
    }
}

fn main() -> std::process::ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "quickstart")
    {
        eprintln!(
            "thoth-controller: the quickstart is `thoth-quickstart` (crate thoth-devtools), e.g. `thoth-quickstart --once`"
        );
        return std::process::ExitCode::from(2);
    }
    let cli = Cli::parse();
    thoth_proto::stdout::quiet_on_closed_stdout();
    init_logging();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("thoth-controller: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data, server_names } => {
            let dir = data.unwrap_or_else(datadir::default_dir);
            let names = (!server_names.is_empty()).then_some(server_names);
            let report = datadir::init(&dir, names.as_deref()).map_err(anyhow::Error::msg)?;
            println!("initialized a controller data directory");
            print_trust(&report.dir, &report.ca_fingerprint, &report.root_public_key);
            println!("next: thoth-controller serve --data {}", dir.display());
            Ok(())
        }
        Command::Serve {
            data,
            listen,
            metrics_listen,
        } => {
            raise_fd_limit();
            let dir = data.unwrap_or_else(datadir::default_dir);
            if !datadir::is_initialized(&dir) {
                let report = datadir::init(&dir, None).map_err(anyhow::Error::msg)?;
                println!("initialized a new controller data directory");
                print_trust(&report.dir, &report.ca_fingerprint, &report.root_public_key);
            }
            let data = DataDir::load(&dir).map_err(anyhow::Error::msg)?;
            let listen = listen.unwrap_or(data.config.listen);
            let metrics = match metrics_listen {
                Some(m) => {
                    let mut c = data.config.clone();
                    c.metrics_listen = m;
                    c.metrics_addr().map_err(anyhow::Error::msg)?
                }
                None => data.config.metrics_addr().map_err(anyhow::Error::msg)?,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut running = server::start_data_dir(data, listen, metrics).await?;
                let url = format!("https://{}", running.addr);
                // thothctl on this machine finds the controller through this file.
                datadir::write_atomic(
                    &dir.join("admin").join("controller.url"),
                    format!("{url}\n").as_bytes(),
                    0o644,
                )?;
                println!("serving gRPC on {url}");
                if let Some(m) = running.metrics_addr {
                    println!("metrics on http://{m}/metrics");
                }
                println!(
                    "admin credential for thothctl: {}",
                    dir.join("admin").display()
                );
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = running.wait() => r?,
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
                    _ = term.recv() => tracing::info!("terminated: shutting down"),
                }
                running.shutdown().await;
                Ok::<_, anyhow::Error>(())
            })
        }
        Command::IssueAdmin {
            data,
            name,
            role,
            tenant,
            out,
        } => {
            let dir = data.unwrap_or_else(datadir::default_dir);
            let data = DataDir::load(&dir).map_err(anyhow::Error::msg)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            pki::check_admin_name(&name).map_err(anyhow::Error::msg)?;
            if let Some(t) = &tenant {
                pki::check_tenant(t).map_err(anyhow::Error::msg)?;
            }
            let identity = Identity::Admin {
                name: name.clone(),
                role,
                tenant: tenant.clone(),
            };
            let cert =
                datadir::write_admin_credential(&out, &data.ca, &identity, SystemTime::now())
                    .map_err(anyhow::Error::msg)?;
            datadir::record_admin_credential(&dir, &cert, "issue-admin")
                .map_err(anyhow::Error::msg)?;
            if let Ok(url) = std::fs::read_to_string(dir.join("admin").join("controller.url")) {
                let _ = datadir::write_atomic(&out.join("controller.url"), url.as_bytes(), 0o644);
            }
            println!(
                "issued an admin credential for {name} (role {role}, tenant {}) in {}",
                tenant.as_deref().unwrap_or("*"),
                out.display()
            );
            println!(
                "use it with: thothctl --credentials {} whoami",
                out.display()
            );
            Ok(())
        }
        Command::Info { data, json } => {
            let dir = data.unwrap_or_else(datadir::default_dir);
            let data = DataDir::load(&dir).map_err(anyhow::Error::msg)?;
            use base64::Engine;
            let root = base64::engine::general_purpose::STANDARD
                .encode(data.root.verifying_key().to_bytes());
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "dataDir": dir,
                        "caFingerprint": data.ca.fingerprint(),
                        "rootPublicKey": root,
                        "signingKeyId": data.signing.key_id,
                        "listen": data.config.listen.to_string(),
                    })
                );
            } else {
                print_trust(&dir, &data.ca.fingerprint(), &root);
                println!("signing key:         {}", data.signing.key_id);
            }
            Ok(())
        }
    }
}
