//! `thoth clients`: every MCP client of this user, its files and servers, governed or not.
//! Also the wrapper form "governed" is judged against, shared with `thoth status`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use thoth_endpoint::ipc::IpcError;
use thoth_endpoint::status::Status;
use thoth_hosts::host::{self, Host, Os};
use thoth_hosts::inventory::{self, FileInfo, ServerInfo, State};

use crate::cli::ClientsArgs;

/// What a governed entry must run: the agent's thoth and the options its canonical wrapper
/// carries, when an agent answers or is installed; else this very binary, with no options.
pub(crate) struct WrapperForm {
    /// The agent's answer.
    pub agent: Result<Status, IpcError>,
    /// The thoth path a governed entry runs.
    pub thoth: String,
    /// The options between `--client HOST` and `--`.
    pub extra: Vec<String>,
    /// Whether an agent decides the form (answering, or installed).
    pub managed: bool,
}

/// Asks the agent at `socket` (see [`WrapperForm`]).
pub(crate) fn wrapper_form(socket: &Path) -> WrapperForm {
    let agent = thoth_endpoint::ipc::fetch_status(socket);
    let extra = match &agent {
        Ok(s) => Some(thoth_hosts::wrapper::canonical_extra(
            Path::new(&s.socket),
            Path::new(&s.state_dir),
        )),
        Err(_) => crate::source::managed()
            .map(|m| thoth_hosts::wrapper::canonical_extra(&m.socket, &m.state_dir)),
    };
    // The agent's thoth, as it reports it; else this very binary (what an installed agent runs).
    let thoth = agent
        .as_ref()
        .ok()
        .and_then(|s| s.thoth_path.clone())
        .or_else(|| {
            std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .ok()
                .map(|p| p.display().to_string())
        })
        .unwrap_or_default();
    WrapperForm {
        agent,
        thoth,
        managed: extra.is_some(),
        extra: extra.unwrap_or_default(),
    }
}

/// One server's state in one word: `disabled` when the host does not run it, else
/// `governed`, `not governed` or `remote`.
pub(crate) fn word(s: &ServerInfo) -> &'static str {
    if s.enabled {
        s.state.word()
    } else {
        "disabled"
    }
}

/// The files of `hosts` for the user whose home is `home`, scanned.
pub(crate) fn scan(
    hosts: &[&'static dyn Host],
    home: &Path,
    form: &WrapperForm,
) -> Vec<(&'static dyn Host, Vec<FileInfo>)> {
    hosts
        .iter()
        .map(|h| {
            let files = h
                .files(home, Os::current())
                .into_iter()
                .map(|p| inventory::scan_file(*h, &p, &form.thoth, &form.extra))
                .collect();
            (*h, files)
        })
        .collect()
}

/// One file as JSON (stable keys).
pub(crate) fn file_json(f: &FileInfo) -> Value {
    json!({
        "path": f.path,
        "error": f.error,
        "servers": f.servers.iter().map(|s| json!({
            "name": s.name,
            "table": s.table,
            "scope": s.scope,
            "transport": s.transport,
            "target": s.target,
            "state": word(s),
            "governed": s.state == State::Governed,
            "enabled": s.enabled,
            "why": match &s.state {
                State::Governed => None,
                st => Some(st.reason()),
            },
        })).collect::<Vec<_>>(),
    })
}

/// Runs `thoth clients`: exit 0, or 1 when a file cannot be read.
pub fn run(args: &ClientsArgs) -> anyhow::Result<i32> {
    let hosts: Vec<&'static dyn Host> = match &args.client {
        Some(id) => vec![super::config::host_by_id(id)?],
        None => host::all().to_vec(),
    };
    let Some(home) = super::config::home() else {
        anyhow::bail!("HOME is not set");
    };
    let form = wrapper_form(&args.agent_socket);
    let scanned = scan(&hosts, &home, &form);
    let unreadable = scanned
        .iter()
        .flat_map(|(_, f)| f)
        .any(|f| f.error.is_some());
    if args.json {
        let all: Vec<FileInfo> = scanned.iter().flat_map(|(_, f)| f.clone()).collect();
        let (servers, governed) = inventory::counts(&all);
        let doc = json!({
            "home": home,
            "thoth": form.thoth,
            "extra": form.extra,
            "agent": form.managed,
            "servers": servers,
            "governed": governed,
            "clients": scanned.iter().map(|(h, files)| json!({
                "id": h.id(),
                "name": h.name(),
                "found": !files.is_empty(),
                "pickup": h.pickup(),
                "files": files.iter().map(file_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(&home, &scanned, &form);
    }
    Ok(if unreadable { 1 } else { 0 })
}

fn print_text(home: &Path, scanned: &[(&'static dyn Host, Vec<FileInfo>)], form: &WrapperForm) {
    let missing: Vec<&str> = scanned
        .iter()
        .filter(|(_, f)| f.is_empty())
        .map(|(h, _)| h.id())
        .collect();
    if missing.len() == scanned.len() {
        println!("no MCP client config found under {}", home.display());
    }
    if form.managed {
        println!(
            "governed means: run by {} as the agent wraps it\n",
            form.thoth
        );
    }
    for (h, files) in scanned.iter().filter(|(_, f)| !f.is_empty()) {
        println!(
            "{} ({}); to apply a change: {}",
            h.name(),
            h.id(),
            h.pickup()
        );
        for f in files {
            println!("  {}", f.path.display());
            if let Some(e) = &f.error {
                println!("    cannot read it: {e}");
                continue;
            }
            if f.servers.is_empty() {
                println!("    no MCP servers");
            }
            let width = f
                .servers
                .iter()
                .map(|s| s.name.chars().count())
                .max()
                .unwrap_or(0)
                .clamp(8, 32);
            for s in &f.servers {
                let scope = s
                    .scope
                    .as_deref()
                    .map(|p| format!(" [{p}]"))
                    .unwrap_or_default();
                let why = match &s.state {
                    State::NotGoverned(w) => format!(": {}", printable(w)),
                    State::Remote => format!(": {}", printable(&s.target)),
                    State::Governed => String::new(),
                };
                let state = if s.enabled {
                    s.state.word().to_owned()
                } else {
                    format!("disabled, {}", s.state.word())
                };
                println!(
                    "    {:<width$}  {state}{why}{}",
                    printable(&s.name),
                    printable(&scope)
                );
            }
        }
    }
    if !missing.is_empty() && missing.len() != scanned.len() {
        println!("\nnot found: {}", missing.join(", "));
    }
}

/// Text from a user's file, safe for a terminal: control characters shown escaped (`\u{1b}`).
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Every host's files under `home`, for `thoth status` (paths only).
pub(crate) fn files_of(
    hosts: &[&'static dyn Host],
    home: &Path,
) -> Vec<(&'static dyn Host, PathBuf)> {
    hosts
        .iter()
        .flat_map(|h| {
            h.files(home, Os::current())
                .into_iter()
                .map(move |p| (*h, p))
        })
        .collect()
}
