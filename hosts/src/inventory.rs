//! What each host file holds: every server, its transport, its command line or URL, whether it
//! is governed (and why not), and whether the host runs it. The same test as the guardian's,
//! `thoth status`'s and the installer's: governed means wrapped exactly as the agent writes it.

use std::path::{Path, PathBuf};

use crate::format::{self, Found};
use crate::host::{Host, HostFilter, Os};
use crate::wrapper::{self, NotGoverned};

/// Whether a server is governed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Runs through the agent's `thoth`, in the canonical form.
    Governed,
    /// A local server that does not run through thoth as the agent would leave it; why.
    NotGoverned(String),
    /// Runs elsewhere (a URL): Thoth cannot govern it from a stdio wrapper.
    Remote,
}

impl State {
    /// One word, for tables and the wire (`governed`, `not governed`, `remote`).
    pub fn word(&self) -> &'static str {
        match self {
            State::Governed => "governed",
            State::NotGoverned(_) => "not governed",
            State::Remote => "remote",
        }
    }

    /// Why it is not governed (empty when it is).
    pub fn reason(&self) -> String {
        match self {
            State::Governed => String::new(),
            State::NotGoverned(why) => why.clone(),
            State::Remote => {
                "a remote server (URL): it runs elsewhere, not through a local wrapper".into()
            }
        }
    }
}

/// One server of one host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Its name (the `--server` name: the key, or an extension's id).
    pub name: String,
    /// Where in the file (see [`Found::table`]).
    pub table: String,
    /// The project it belongs to, for project-scoped tables.
    pub scope: Option<String>,
    /// `stdio`, or the remote transport as written (`http`, `sse`…; `url` when unsaid).
    pub transport: String,
    /// The command line it runs (the original one, for a wrapped entry), or its URL.
    pub target: String,
    /// Governed or not.
    pub state: State,
    /// Whether the host runs it.
    pub enabled: bool,
}

/// One host file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// The host's id.
    pub host: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its servers (empty when it could not be read).
    pub servers: Vec<ServerInfo>,
    /// Why it could not be read or parsed.
    pub error: Option<String>,
}

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_alphanumeric() || "-_./:=@%+,\\".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn command_line(cmd: &str, args: &[String]) -> String {
    std::iter::once(cmd)
        .chain(args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The inventory record of one entry of `path` (`text`: the file's text).
pub fn server_info(
    host: &dyn Host,
    path: &Path,
    text: &str,
    found: &Found,
    thoth: &str,
    extra: &[String],
) -> ServerInfo {
    let ctx = host.ctx(path);
    let e = &found.entry;
    let server = ctx.server_name(&found.name);
    let (transport, target, state) = if let Some(why) = &e.malformed {
        (
            "stdio".to_owned(),
            String::new(),
            State::NotGoverned(format!("the entry cannot be read: {why}")),
        )
    } else if e.is_remote() {
        // Its URL; else (a remote type beside a command, or no URL at all) what it names.
        let target = e.url.clone().unwrap_or_else(|| {
            e.command
                .as_deref()
                .map(|c| command_line(c, e.args.as_deref().unwrap_or(&[])))
                .unwrap_or_default()
        });
        (
            e.transport.clone().unwrap_or_else(|| "url".into()),
            target,
            State::Remote,
        )
    } else if let Some(cmd) = &e.command {
        let args = e.args.clone().unwrap_or_default();
        // A wrapped entry shows what runs behind thoth (whatever its markers say: an extension's
        // override that had only a command carries the base's arguments there).
        let target = match e.is_wrapped().then(|| wrapper::inner_line(&args)).flatten() {
            Some((c, a)) => command_line(&c, &a),
            None => command_line(cmd, &args),
        };
        let state = match wrapper::governed(&server, ctx.client, e, thoth, extra) {
            Ok(()) if e.also_names_a_url() => State::NotGoverned(format!(
                "it also names a URL ({}): the client may connect there instead of running the \
                 command",
                e.url.as_deref().unwrap_or_default()
            )),
            Ok(()) => State::Governed,
            Err(NotGoverned::NotWrapped) => State::NotGoverned("not wrapped by thoth".into()),
            Err(why) => State::NotGoverned(why.to_string()),
        };
        ("stdio".to_owned(), target, state)
    } else {
        (
            "stdio".to_owned(),
            String::new(),
            State::NotGoverned("no command and no URL".into()),
        )
    };
    ServerInfo {
        name: server,
        table: found.table.clone(),
        scope: found.scope.clone(),
        transport,
        target,
        enabled: host.enabled(path, text, found),
        state,
    }
}

/// Every server of one host file (`thoth`, `extra`: what the agent's wrapper is).
pub fn scan_file(host: &'static dyn Host, path: &Path, thoth: &str, extra: &[String]) -> FileInfo {
    scan_file_as(host, path, thoth, extra, None)
}

/// [`scan_file`] for the user `owner` (the uid owning the home it was found in; see
/// [`crate::file::read_config_as`]).
pub fn scan_file_as(
    host: &'static dyn Host,
    path: &Path,
    thoth: &str,
    extra: &[String],
    owner: Option<u32>,
) -> FileInfo {
    let mut info = FileInfo {
        host: host.id(),
        path: path.to_path_buf(),
        servers: Vec::new(),
        error: None,
    };
    let text = match crate::file::read_config_as(path, owner, host.max_bytes(path)) {
        Ok((bytes, _)) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                info.error = Some("not UTF-8 text".into());
                return info;
            }
        },
        Err(e) => {
            info.error = Some(e.to_string());
            return info;
        }
    };
    match format::entries(&text, &host.format(path)) {
        Ok(found) => {
            let found = host.servers(path, &text, found, Os::current());
            info.servers = found
                .iter()
                .map(|f| server_info(host, path, &text, f, thoth, extra))
                .collect();
        }
        Err(e) => info.error = Some(e.to_string()),
    }
    info
}

/// Every file of the managed hosts under `homes`, scanned.
pub fn scan(
    homes: &[PathBuf],
    filter: &HostFilter,
    thoth: &str,
    extra: &[String],
) -> Vec<FileInfo> {
    crate::host::discover(homes, filter)
        .into_iter()
        .map(|f| {
            let owner = crate::host::home_owner(&f.home);
            scan_file_as(f.host, &f.path, thoth, extra, owner)
        })
        .collect()
}

/// (servers, governed) over `files`: the counts `thoth-installer status` and the heartbeat
/// give.
pub fn counts(files: &[FileInfo]) -> (usize, usize) {
    let servers = files.iter().map(|f| f.servers.len()).sum();
    let governed = files
        .iter()
        .flat_map(|f| &f.servers)
        .filter(|s| s.state == State::Governed)
        .count();
    (servers, governed)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_clients_directory_pointing_into_another_users_home_is_listed_but_never_read_for_this_user()
    {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: ownership only matters to the root agent");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let (ann, bob) = (root.path().join("ann"), root.path().join("bob"));
        std::fs::create_dir_all(bob.join(".cursor")).unwrap();
        std::fs::create_dir_all(&ann).unwrap();
        std::fs::write(
            bob.join(".cursor/mcp.json"),
            r#"{"mcpServers": {"bobs": {"command": "/home/bob/secret-tool", "args": ["--token", "b0b"]}}}"#,
        )
        .unwrap();
        for (dir, uid) in [(&ann, 41001), (&bob, 41002)] {
            std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).unwrap();
        }
        std::os::unix::fs::lchown(bob.join(".cursor"), Some(41002), Some(41002)).unwrap();
        std::os::unix::fs::lchown(bob.join(".cursor/mcp.json"), Some(41002), Some(41002)).unwrap();
        // Ann's ~/.cursor is a link to Bob's.
        std::os::unix::fs::symlink(bob.join(".cursor"), ann.join(".cursor")).unwrap();
        std::os::unix::fs::lchown(ann.join(".cursor"), Some(41001), Some(41001)).unwrap();
        let found = scan(
            std::slice::from_ref(&ann),
            &HostFilter::all(),
            "/t/thoth",
            &[],
        );
        let text = format!("{found:?}");
        assert!(
            !text.contains("bobs") && !text.contains("b0b") && !text.contains("secret-tool"),
            "Bob's servers read through Ann's home: {text}"
        );
        // Seen, with why it is not read.
        assert!(
            found.iter().any(|f| f
                .error
                .as_deref()
                .is_some_and(|e| e.contains("home's owner"))),
            "{text}"
        );
        // Bob's own home still has it.
        let found = crate::host::discover(std::slice::from_ref(&bob), &HostFilter::all());
        assert_eq!(found.len(), 1, "{found:?}");
    }
}
