//! `thoth-installer`: see `thoth-installer --help`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use thoth_agent::claude::file as claude;
use thoth_agent::daemon::config::{AgentConfig, parse_root_key};
use thoth_agent::daemon::state::write_atomic;

/// Installs the Thoth agent on this machine, silently and idempotently (what MDM runs), reports
/// its state for MDM checks, and removes it cleanly (restoring every user's Claude Desktop config).
///
///   thoth-installer install --controller https://thoth.example.com:7443 --tenant acme \
///       --enroll-token-file /tmp/token --ca-fingerprint sha256:… --root-key …
///   thoth-installer status --json
///   thoth-installer uninstall
///
/// Settings may also come from the MDM's managed configuration (Linux: /etc/thoth/managed.toml);
/// flags win over managed settings, which win over defaults.
///
/// Exit status: 0 done, 1 other error, 2 bad arguments, 3 installed but the controller is not
/// reachable yet (the agent enrolls when it is), 4 permission denied, 5 already installed (nothing
/// changed).
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
        /// Keep the state directory (identity, policy) and settings.
        #[arg(long)]
        keep_data: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// What is installed and how it is doing (for a Jamf extension attribute or Intune detection).
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        root: RootArgs,
    },
}

#[derive(Args, Clone)]
struct RootArgs {
    /// Install under this root instead of / (tests, images); the service is not started there.
    #[arg(long, value_name = "DIR", default_value = "/")]
    prefix: PathBuf,
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
    /// Labels, k=v,k=v.
    #[arg(long)]
    labels: Option<String>,
    /// Do not start the service.
    #[arg(long)]
    no_start: bool,
    /// Where the thoth and thoth-agent binaries to install are [default: next to this program].
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    #[command(flatten)]
    root: RootArgs,
}

/// Managed settings (what an MDM profile provides), all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Managed {
    controller: Option<String>,
    tenant: Option<String>,
    enroll_token_file: Option<PathBuf>,
    ca_fingerprint: Option<String>,
    root_key: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

/// What install recorded, for status and uninstall.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    version: String,
    installed_at: String,
    files: Vec<PathBuf>,
    controller: String,
    tenant: String,
}

struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(1, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> Fail {
    Fail(2, msg.into())
}

/// Paths of an installation under a root.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn bin_dir(&self) -> PathBuf {
        self.p("usr/local/bin")
    }
    fn etc(&self) -> PathBuf {
        self.p("etc/thoth")
    }
    fn state(&self) -> PathBuf {
        self.p("var/lib/thoth")
    }
    fn socket(&self) -> PathBuf {
        self.p("run/thoth/agent.sock")
    }
    fn unit(&self) -> PathBuf {
        self.p("etc/systemd/system/thoth-agent.service")
    }
    fn manifest(&self) -> PathBuf {
        self.state().join("install.json")
    }
    fn users_root(&self) -> PathBuf {
        if self.is_system() {
            PathBuf::from(if cfg!(target_os = "macos") {
                "/Users"
            } else {
                "/home"
            })
        } else {
            self.p("home")
        }
    }
    fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Install(a) => install(a),
        Command::Uninstall { keep_data, root } => {
            uninstall(&Layout { root: root.prefix }, keep_data)
        }
        Command::Status { json, root } => status(&Layout { root: root.prefix }, json),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("thoth-installer: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The systemd unit, hardened.
fn systemd_unit(l: &Layout) -> String {
    format!(
        "# Installed by thoth-installer. Changes are overwritten by the next install.\n[Unit]\nDescription=Thoth agent: governs the MCP servers AI assistants use\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\nExecStart={bin}/thoth-agent run --config {etc}/agent.toml\nRestart=always\nRestartSec=5\nRuntimeDirectory=thoth\nRuntimeDirectoryMode=0755\nStateDirectory=thoth\nNoNewPrivileges=yes\nProtectSystem=full\nProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectControlGroups=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\nPrivateTmp=yes\n\n[Install]\nWantedBy=multi-user.target\n",
        bin = l.bin_dir().display(),
        etc = l.etc().display(),
    )
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
    format!(
        "# Written by thoth-installer; see agent/thoth-agent.example.toml for every setting.\ncontroller_url = {}\ntenant = {}\nca_fingerprint = {}\nroot_public_key = {}\nenrollment_token_file = {}\nstate_dir = {}\nsocket_path = {}\nusers_root = {}\nthoth_path = {}\n{labels}",
        toml_str(&s.controller),
        toml_str(&s.tenant),
        toml_str(&s.ca_fingerprint),
        toml_str(&s.root_key),
        toml_str(&l.etc().join("enrollment-token").display().to_string()),
        toml_str(&l.state().display().to_string()),
        toml_str(&l.socket().display().to_string()),
        toml_str(&l.users_root().display().to_string()),
        toml_str(&l.bin_dir().join("thoth").display().to_string()),
    )
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

struct Resolved {
    controller: String,
    tenant: String,
    token: Option<String>,
    ca_fingerprint: String,
    root_key: String,
    labels: BTreeMap<String, String>,
}

fn resolve(a: &InstallArgs, l: &Layout) -> Result<Resolved, Fail> {
    let managed_path = l.etc().join("managed.toml");
    let managed: Managed = match std::fs::read_to_string(&managed_path) {
        Ok(t) => toml::from_str(&t).map_err(|e| bad(format!("{}: {e}", managed_path.display())))?,
        Err(_) => Managed::default(),
    };
    let pick = |flag: &Option<String>, m: &Option<String>, name: &str| -> Result<String, Fail> {
        flag.clone().or_else(|| m.clone()).ok_or_else(|| {
            bad(format!(
                "--{name} is required (or set it in {})",
                managed_path.display()
            ))
        })
    };
    let token = match (
        &a.enroll_token,
        &a.enroll_token_file,
        &managed.enroll_token_file,
    ) {
        (Some(t), _, _) => Some(t.trim().to_owned()),
        (None, Some(f), _) | (None, None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    bad(format!(
                        "cannot read the enrollment token file {}: {e}",
                        f.display()
                    ))
                })?
                .trim()
                .to_owned(),
        ),
        _ => None,
    };
    let mut labels = managed.labels.clone().unwrap_or_default();
    if let Some(text) = &a.labels {
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("label {part:?} is not key=value")))?;
            labels.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    let r = Resolved {
        controller: pick(&a.controller, &managed.controller, "controller")?,
        tenant: pick(&a.tenant, &managed.tenant, "tenant")?,
        ca_fingerprint: pick(&a.ca_fingerprint, &managed.ca_fingerprint, "ca-fingerprint")?,
        root_key: pick(&a.root_key, &managed.root_key, "root-key")?,
        token,
        labels,
    };
    // The agent's own checks, so a bad value is refused now rather than at first start.
    let probe = format!(
        "controller_url = {}\ntenant = {}\nca_fingerprint = {}\nroot_public_key = {}\n",
        toml_str(&r.controller),
        toml_str(&r.tenant),
        toml_str(&r.ca_fingerprint),
        toml_str(&r.root_key)
    );
    let cfg: AgentConfig = toml::from_str(&probe).map_err(|e| bad(e.to_string()))?;
    cfg.check().map_err(bad)?;
    parse_root_key(&r.root_key).map_err(bad)?;
    Ok(r)
}

/// One reversible change.
enum Undo {
    Restore(PathBuf, Vec<u8>, u32),
    Remove(PathBuf),
}

struct Tx {
    undo: Vec<Undo>,
    written: Vec<PathBuf>,
}

impl Tx {
    fn write(&mut self, path: &Path, bytes: &[u8], mode: u32, step: &str) -> Result<bool, Fail> {
        if std::env::var("THOTH_INSTALLER_FAIL_AT").as_deref() == Ok(step) {
            return Err(Fail(1, format!("injected failure at {step}")));
        }
        self.written.push(path.to_path_buf());
        let old = std::fs::read(path).ok();
        #[cfg(unix)]
        let old_mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644)
        };
        #[cfg(not(unix))]
        let old_mode = 0o644;
        if old.as_deref() == Some(bytes) {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if old_mode & 0o7777 != mode {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| perm(path, e))?;
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| perm(dir, e))?;
        }
        write_atomic(path, bytes, mode).map_err(|e| perm(path, e))?;
        self.undo.push(match old {
            Some(b) => Undo::Restore(path.to_path_buf(), b, old_mode),
            None => Undo::Remove(path.to_path_buf()),
        });
        Ok(true)
    }

    fn rollback(self) {
        for u in self.undo.into_iter().rev() {
            match u {
                Undo::Restore(p, b, m) => {
                    let _ = write_atomic(&p, &b, m);
                }
                Undo::Remove(p) => {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

fn perm(path: &Path, e: std::io::Error) -> Fail {
    let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
        4
    } else {
        1
    };
    Fail(
        code,
        format!(
            "{}: {e}{}",
            path.display(),
            if code == 4 { " (run as root)" } else { "" }
        ),
    )
}

fn install(a: InstallArgs) -> Result<u8, Fail> {
    let l = Layout {
        root: a.root.prefix.clone(),
    };
    let s = resolve(&a, &l)?;
    let from = match &a.from {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    };
    let mut bins = Vec::new();
    for name in ["thoth", "thoth-agent"] {
        let src = from.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let bytes = std::fs::read(&src).map_err(|e| {
            bad(format!(
                "cannot read {}: {e} (use --from DIR)",
                src.display()
            ))
        })?;
        bins.push((name, bytes));
    }
    let mut tx = Tx {
        undo: Vec::new(),
        written: Vec::new(),
    };
    let result = (|| -> Result<bool, Fail> {
        let mut changed = false;
        for (name, bytes) in &bins {
            changed |= tx.write(
                &l.bin_dir().join(name),
                bytes,
                0o755,
                &format!("bin:{name}"),
            )?;
        }
        if let Some(token) = &s.token {
            changed |= tx.write(
                &l.etc().join("enrollment-token"),
                format!("{token}\n").as_bytes(),
                0o600,
                "token",
            )?;
        }
        changed |= tx.write(
            &l.etc().join("agent.toml"),
            agent_toml(&l, &s).as_bytes(),
            0o644,
            "config",
        )?;
        changed |= tx.write(&l.unit(), systemd_unit(&l).as_bytes(), 0o644, "unit")?;
        std::fs::create_dir_all(l.state()).map_err(|e| perm(&l.state(), e))?;
        Ok(changed)
    })();
    let changed = match result {
        Ok(c) => c,
        Err(e) => {
            tx.rollback();
            return Err(Fail(
                e.0,
                format!("{}; the previous installation was put back", e.1),
            ));
        }
    };
    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION").into(),
        installed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files: tx.written.clone(),
        controller: s.controller.clone(),
        tenant: s.tenant.clone(),
    };
    let old = std::fs::read_to_string(l.manifest()).ok();
    if !changed && old.is_some() {
        println!("thoth is already installed with these settings; nothing changed");
        return Ok(5);
    }
    write_atomic(
        &l.manifest(),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
        0o644,
    )
    .map_err(|e| perm(&l.manifest(), e))?;
    println!(
        "installed thoth {} under {}",
        manifest.version,
        l.root.display()
    );
    if l.is_system() && !a.no_start && Path::new("/bin/systemctl").exists() {
        for args in [
            &["daemon-reload"][..],
            &["enable", "--now", "thoth-agent"],
            &["restart", "thoth-agent"],
        ] {
            let ok = std::process::Command::new("systemctl")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                eprintln!("thoth-installer: systemctl {} failed", args.join(" "));
            }
        }
    } else {
        println!(
            "the service was not started ({})",
            if a.no_start {
                "--no-start"
            } else {
                "not the system root"
            }
        );
    }
    if !reachable(&s.controller) {
        eprintln!(
            "thoth-installer: the controller at {} is not reachable now; the agent will enroll when it is",
            s.controller
        );
        return Ok(3);
    }
    Ok(0)
}

fn reachable(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(3)).is_ok()
        })
}

fn uninstall(l: &Layout, keep_data: bool) -> Result<u8, Fail> {
    let Ok(text) = std::fs::read_to_string(l.manifest()) else {
        println!("thoth is not installed under {}", l.root.display());
        return Ok(0);
    };
    let manifest: Manifest = serde_json::from_str(&text)?;
    if l.is_system() && Path::new("/bin/systemctl").exists() {
        let _ = std::process::Command::new("systemctl")
            .args(["disable", "--now", "thoth-agent"])
            .status();
    }
    // Every user's Claude Desktop config back to its original entries.
    let mut restored = 0;
    for cfg in claude::discover(Some(&l.users_root())) {
        match claude::rewrite_file(&cfg, &claude::Op::Unwrap, false) {
            Ok(o) if o.written => restored += 1,
            Ok(_) => {}
            Err(e) => eprintln!("thoth-installer: {e} (left as it was)"),
        }
    }
    for f in &manifest.files {
        if keep_data && (f.starts_with(l.etc())) {
            continue;
        }
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(l.manifest());
    if !keep_data {
        let _ = std::fs::remove_dir_all(l.state());
        let _ = std::fs::remove_dir_all(l.etc());
    }
    println!(
        "uninstalled thoth from {}; {restored} Claude Desktop config(s) restored",
        l.root.display()
    );
    Ok(0)
}

fn status(l: &Layout, json: bool) -> Result<u8, Fail> {
    let manifest: Option<Manifest> = std::fs::read_to_string(l.manifest())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let agent = thoth_agent::daemon::local::fetch_status(&l.socket()).ok();
    let identity: Option<serde_json::Value> =
        std::fs::read_to_string(l.state().join("identity/agent.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let configs = claude::discover(Some(&l.users_root()));
    let governed = configs
        .iter()
        .filter(|c| {
            thoth_agent::daemon::inventory::governed_counts(c).is_some_and(|(t, g)| t > 0 && g == t)
        })
        .count();
    let service = match (&manifest, &agent) {
        (None, _) => "not installed",
        (Some(_), Some(_)) => "running",
        (Some(_), None) => "stopped",
    };
    let doc = serde_json::json!({
        "installed": manifest.is_some(),
        "version": manifest.as_ref().map(|m| m.version.clone()),
        "installedAt": manifest.as_ref().map(|m| m.installed_at.clone()),
        "controller": manifest.as_ref().map(|m| m.controller.clone()),
        "tenant": manifest.as_ref().map(|m| m.tenant.clone()),
        "service": service,
        "enrolled": identity.is_some(),
        "agentId": identity.as_ref().and_then(|i| i.get("agentId").cloned()),
        "policyVersion": agent.as_ref().and_then(|a| a.policy.as_ref().map(|p| p.version)),
        "configs": configs.len(),
        "governedConfigs": governed,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (k, v) in doc.as_object().expect("object") {
            println!(
                "{k:<16} {}",
                if v.is_null() {
                    "-".to_owned()
                } else {
                    v.to_string().trim_matches('"').to_owned()
                }
            );
        }
    }
    Ok(if manifest.is_some() { 0 } else { 1 })
}
