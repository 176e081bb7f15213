//! `thoth-installer`: see `thoth-installer --help`.

#![forbid(unsafe_code)]

/// `println!` that never panics: a closed stdout (`thoth-installer … | head`) is ignored, so an
/// install or uninstall always finishes (or rolls back) and exits with its own status.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that never panics (see `say!`).
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout();
        let _ = write!(out, $($arg)*).and_then(|()| out.flush());
    }};
}

mod error;
mod layout;
mod manifest;
mod reach;
mod service;
mod settings;
mod status;
mod tx;
mod uninstall;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use error::{InstallerError, bad};
use layout::{Layout, Platform};
use manifest::Manifest;
use settings::{Resolved, toml_str};
use tx::Tx;

/// Installs the Thoth agent on this machine, silently and idempotently (what MDM runs), reports
/// its state for MDM checks, and removes it cleanly (restoring every user's Claude Desktop config).
///
///   thoth-installer install --controller https://thoth.example.com:7443 --tenant acme \
///       --enroll-token-file /tmp/token --ca-fingerprint sha256:… --root-key …
///   thoth-installer status --json
///   thoth-installer uninstall
///
/// Settings may also come from the MDM's managed configuration, with the same names
/// (controller, tenant, enroll_token or enroll_token_file, ca_fingerprint, root_key, labels):
///   Linux    /etc/thoth/managed.toml
///   macOS    a configuration profile for the com.thoth.agent domain
///            (/Library/Managed Preferences/com.thoth.agent.plist)
///   Windows  string values under HKLM\SOFTWARE\Policies\Thoth (labels as k=v,k=v)
/// Flags win over managed settings, which win over the current installation's settings: run
/// `install` again with no settings to repair or upgrade in place.
///
/// Exit status:
///   0  installed / done
///   1  other error (nothing half-installed: a failed install puts back what was there)
///   2  bad arguments or settings (nothing changed)
///   3  installed, but the controller is not reachable now; the agent enrolls when it is
///   4  permission denied (run as root / Administrator)
///   5  already installed with these settings; nothing changed
///   6  installed, but the controller answered with a CA that is not the pinned one
///      (check --ca-fingerprint): the agent cannot enroll until the settings are fixed
///   7  installed, but the agent service could not be started (the message says why)
#[derive(Parser)]
#[command(name = "thoth-installer", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install, repair or upgrade in place. A failure part-way puts back what was there.
    Install(InstallArgs),
    /// Stop and remove the agent, unwrap every user's Claude Desktop config, remove the files.
    Uninstall {
        /// Keep the settings and the state directory (identity, policy) for a reinstall.
        #[arg(long)]
        keep_data: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// What is installed and how it is doing (for a Jamf extension attribute or Intune detection).
    Status {
        /// JSON output (one object; see packaging/README.md for the fields).
        #[arg(long, conflicts_with = "summary")]
        json: bool,
        /// One line (what a Jamf extension attribute shows), e.g.
        /// "thoth 0.1.0 running, enrolled, policy v3, 2/2 MCP servers governed, 0 remote, in 2 files of 1 clients".
        #[arg(long)]
        summary: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Print the agent's service definition for a platform (systemd unit, launchd plist, or the
    /// sc.exe commands of the Windows service), as install writes it.
    Service {
        #[command(flatten)]
        root: RootArgs,
    },
}

#[derive(Args, Clone)]
struct RootArgs {
    /// Install under this root instead of the system root (tests, images, package payloads); no
    /// service is registered or started there.
    #[arg(long, value_name = "DIR")]
    prefix: Option<PathBuf>,
    /// Lay out for this operating system [default: this one]. Another one needs --prefix.
    #[arg(long, value_enum, env = "THOTH_INSTALLER_PLATFORM")]
    platform: Option<Platform>,
    /// With --prefix: the tree is a system image that will run as its own root, so paths
    /// written into the files (agent.toml, the service) are the image's, without the prefix.
    /// Without it the software runs from under the prefix (a sandbox, as in quickstart).
    #[arg(long, requires = "prefix")]
    image: bool,
}

impl RootArgs {
    fn layout(&self) -> Result<Layout, InstallerError> {
        let platform = self.platform.unwrap_or_else(Platform::native);
        let system_prefix = self.prefix.as_deref().is_none_or(|p| p == Path::new("/"));
        if platform != Platform::native() && system_prefix {
            return Err(bad(format!(
                "--platform {} lays out another operating system's files: give --prefix DIR too",
                platform.name()
            )));
        }
        let mut l = Layout::new(self.prefix.clone(), platform);
        if self.image {
            l.seen_from = Some(PathBuf::from(if platform == Platform::Windows {
                "C:\\"
            } else {
                "/"
            }));
        }
        Ok(l)
    }
}

#[derive(Args)]
struct InstallArgs {
    /// The controller URL (https://host:port).
    #[arg(long)]
    controller: Option<String>,
    /// The tenant this machine belongs to.
    #[arg(long)]
    tenant: Option<String>,
    /// Enrollment token (prefer --enroll-token-file or THOTH_ENROLL_TOKEN: arguments are visible
    /// in process lists).
    #[arg(long, env = "THOTH_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// A file holding the enrollment token.
    #[arg(long, value_name = "FILE")]
    enroll_token_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the controller CA (`thoth-controller info`).
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// The controller's root public key (`thoth-controller info`).
    #[arg(long)]
    root_key: Option<String>,
    /// Labels, k=v,k=v (added to managed labels; a flag wins for the same key).
    #[arg(long)]
    labels: Option<String>,
    /// Do not register or start the service.
    #[arg(long)]
    no_start: bool,
    /// Where the binaries to install are [default: next to this program].
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    #[command(flatten)]
    root: RootArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Install(a) => install(a),
        Command::Uninstall { keep_data, root } => root
            .layout()
            .and_then(|l| uninstall::uninstall(&l, keep_data)),
        Command::Status {
            json,
            summary,
            root,
        } => root
            .layout()
            .and_then(|l| status::status(&l, json, summary)),
        Command::Service { root } => root.layout().map(|l| {
            say_raw!("{}", service::render(&l));
            0
        }),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("thoth-installer: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn agent_toml(l: &Layout, s: &Resolved) -> String {
    let mut labels = String::new();
    if !s.labels.is_empty() {
        let parts: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
            .collect();
        labels = format!("labels = {{ {} }}\n", parts.join(", "));
    }
    let path = |p: PathBuf| toml_str(&p.display().to_string());
    format!(
        "# Written by thoth-installer; see agent/thoth-agent.example.toml for every setting.\ncontroller_url = {}\ntenant = {}\nca_fingerprint = {}\nroot_public_key = {}\nenrollment_token_file = {}\nstate_dir = {}\nsocket_path = {}\nusers_root = {}\nthoth_path = {}\n{labels}",
        toml_str(&s.controller),
        toml_str(&s.tenant),
        toml_str(&s.ca_fingerprint),
        toml_str(&s.root_key),
        path(l.etc().join("enrollment-token")),
        path(l.state()),
        path(l.socket()),
        path(l.users_root()),
        path(l.bin_dir().join(l.exe("thoth"))),
    )
}

fn install(a: InstallArgs) -> Result<u8, InstallerError> {
    let l = a.root.layout()?;
    let source = settings::managed(&l)?;
    let s = settings::resolve(
        &settings::Flags {
            controller: &a.controller,
            tenant: &a.tenant,
            enroll_token: &a.enroll_token,
            enroll_token_file: &a.enroll_token_file,
            ca_fingerprint: &a.ca_fingerprint,
            root_key: &a.root_key,
            labels: &a.labels,
        },
        &source,
    )?;
    let here = std::env::current_exe().map_err(InstallerError::SelfPath)?;
    let from = match &a.from {
        Some(d) => d.clone(),
        None => here.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let mut bins = Vec::new();
    for name in ["thoth", "thoth-agent", "thoth-installer"] {
        let exe = l.exe(name);
        let mut src = from.join(&exe);
        if name == "thoth-installer" && !src.exists() && l.platform == Platform::native() {
            src = here.clone();
        }
        let bytes = std::fs::read(&src)
            .map_err(|source| InstallerError::MissingProgram { path: src, source })?;
        bins.push((exe, bytes));
    }
    if l.system {
        check_bin_dir(&l.bin_dir())?;
    }
    let old: Option<Manifest> = std::fs::read_to_string(l.manifest())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let version = env!("CARGO_PKG_VERSION");
    let mut tx = Tx::default();
    let result = (|| -> Result<bool, InstallerError> {
        // Directories first, with explicit modes (an MDM script's umask must not make them
        // unreadable to users' proxies, which read the trust file and last-known-good policy).
        // The state directory is 0711: proxies open those two by name, but nobody else lists
        // it or reads the spool and status inside (the agent keeps those 0600/0700).
        let dir_mode = |d: &Path| if d == l.state() { 0o711 } else { 0o755 };
        let mut dirs = vec![l.bin_dir(), l.etc(), l.state()];
        dirs.extend(l.log_file().and_then(|f| f.parent().map(Path::to_path_buf)));
        for dir in &dirs {
            // Missing parents (/var/lib in an image) get the usual 0755.
            if let Some(parent) = dir.parent() {
                tx.dir(parent, 0o755)?;
            }
            tx.dir(dir, dir_mode(dir))?;
        }
        // Thoth's own directories get their mode back on every run (a repair); shared ones
        // (/usr/local/bin) are left as they are.
        #[cfg(unix)]
        for dir in dirs.iter().filter(|d| {
            d.starts_with(l.etc())
                || *d == &l.state()
                || l.log_file().is_some_and(|f| f.starts_with(d))
        }) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode(dir)));
        }
        let mut changed = false;
        for (exe, bytes) in &bins {
            changed |= tx.write(
                &l.bin_dir().join(exe),
                bytes,
                0o755,
                &format!("bin:{}", exe.trim_end_matches(".exe")),
            )?;
        }
        // A new token, or the one already there (kept, and made root-only again if it was not).
        let token_path = l.etc().join("enrollment-token");
        let token = match &s.token {
            Some(t) => Some(format!("{t}\n").into_bytes()),
            None => std::fs::read(&token_path).ok(),
        };
        if let Some(token) = token {
            changed |= tx.write(&token_path, &token, 0o600, "token")?;
        }
        let seen = l.as_seen();
        changed |= tx.write(
            &l.etc().join("agent.toml"),
            agent_toml(&seen, &s).as_bytes(),
            0o644,
            "config",
        )?;
        if let Some(unit) = l.service_file() {
            changed |= tx.write(&unit, service::render(&seen).as_bytes(), 0o644, "unit")?;
        }
        // The manifest, in the same transaction, whenever anything changed or it is missing or
        // from another version.
        if changed || old.as_ref().is_none_or(|m| m.version != version) {
            let manifest = Manifest {
                version: version.into(),
                installed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
                files: tx.written.iter().map(|f| l.seen_path(f)).collect(),
                controller: s.controller.clone(),
                tenant: s.tenant.clone(),
            };
            let json = serde_json::to_string_pretty(&manifest).map_err(InstallerError::Json)?;
            tx.write(&l.manifest(), json.as_bytes(), 0o644, "manifest")?;
            changed = true;
        }
        Ok(changed)
    })();
    let changed = match result {
        Ok(c) => c,
        Err(e) => {
            tx.rollback();
            return Err(InstallerError::RolledBack(Box::new(e)));
        }
    };
    // Files an earlier version installed that this one no longer does (a moved directory).
    if let Some(old) = &old {
        for f in old.files.iter().map(|f| l.real_path(f)) {
            if !tx.written.contains(&f) && f != l.manifest() && std::fs::remove_file(&f).is_ok() {
                say!("removed {} (no longer part of thoth)", f.display());
            }
        }
    }
    if changed {
        say!(
            "installed thoth {version} under {} ({})",
            l.root.display(),
            l.platform.name()
        );
    } else {
        say!("thoth {version} is already installed with these settings; nothing changed");
    }
    if l.system && l.platform == Platform::Windows {
        let failed = service::run(&service::windows_acl_plan(&l));
        if !failed.is_empty() {
            return Err(InstallerError::Acl {
                dir: l.etc(),
                failures: failed,
            });
        }
    }
    // The service: (re)started when anything changed, when it is not running, or when the
    // running agent is older than the binary on disk (a package manager replaced it).
    let mut start_failed = Vec::new();
    if l.system && !a.no_start {
        if changed || agent_outdated(&l) {
            if l.platform == Platform::Windows {
                // sc.exe cannot re-create a service that is still stopping.
                service::run(&service::stop_plan(&l));
                service::wait_stopped(&l);
            }
            start_failed = service::run(&service::start_plan(&l));
            if start_failed.is_empty() {
                say!("the agent service is registered and (re)started");
            }
        } else {
            say!("the agent service is running the installed version");
        }
    } else {
        say!(
            "the service was not started ({})",
            if a.no_start {
                "--no-start"
            } else {
                "not the system root"
            }
        );
    }
    if !start_failed.is_empty() {
        for f in &start_failed {
            eprintln!("thoth-installer: {f}");
        }
        return Err(InstallerError::ServiceNotStarted);
    }
    if !changed {
        return Ok(5);
    }
    match reach::probe(&s.controller, &s.ca_fingerprint, Duration::from_secs(5)) {
        reach::Reach::Trusted => {
            say!(
                "the controller at {} answered with the pinned CA",
                s.controller
            );
            Ok(0)
        }
        reach::Reach::Unreachable(why) => {
            eprintln!(
                "thoth-installer: the controller at {} is not reachable now ({why}); the agent will enroll when it is",
                s.controller
            );
            Ok(3)
        }
        reach::Reach::Untrusted(why) => {
            eprintln!(
                "thoth-installer: the controller at {} is not the pinned one ({why}); check the CA fingerprint with `thoth-controller info` and install again",
                s.controller
            );
            Ok(6)
        }
    }
}

/// Root runs the agent from the bin directory: refuse one that someone else could write to.
fn check_bin_dir(dir: &Path) -> Result<(), InstallerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let Ok(meta) = std::fs::metadata(dir) else {
            return Ok(()); // created by this install, root-owned
        };
        let mode = meta.permissions().mode();
        if meta.uid() != 0 || mode & 0o002 != 0 {
            return Err(InstallerError::UnsafeBinDir {
                dir: dir.to_path_buf(),
                uid: meta.uid(),
                mode: mode & 0o7777,
            });
        }
        if mode & 0o020 != 0 {
            eprintln!(
                "thoth-installer: warning: {} is group-writable (gid {}); members of that group could replace the programs root runs",
                dir.display(),
                meta.gid()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// True when the agent is not answering on its socket, runs another version, or started
/// before its binary was last replaced.
fn agent_outdated(l: &Layout) -> bool {
    let Ok(st) = thoth_endpoint::ipc::fetch_status(&l.socket()) else {
        return true;
    };
    if st.agent_version != env!("CARGO_PKG_VERSION") {
        return true;
    }
    // When the binary was last replaced: its change time (package managers keep the package's
    // modification time, but cannot set ctime), in whole seconds like `started_at`.
    let Ok(meta) = std::fs::metadata(l.bin_dir().join(l.exe("thoth-agent"))) else {
        return false;
    };
    #[cfg(unix)]
    let replaced = {
        use std::os::unix::fs::MetadataExt;
        meta.ctime()
    };
    #[cfg(not(unix))]
    let replaced = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let started = humantime::parse_rfc3339_weak(&st.started_at)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    replaced > started
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_bin_dir_others_can_write_to_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let set = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m));
        set(0o777).unwrap();
        let e = check_bin_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not world-writable"), "{e}");
        set(0o775).unwrap(); // group-writable: a warning only
        let root = rustix::process::geteuid().is_root();
        assert_eq!(check_bin_dir(dir.path()).is_ok(), root);
        if root {
            set(0o755).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(54321), None).unwrap();
            let e = check_bin_dir(dir.path()).unwrap_err().to_string();
            assert!(e.contains("uid 54321"), "{e}");
        }
        assert!(check_bin_dir(&dir.path().join("absent")).is_ok());
    }
}
