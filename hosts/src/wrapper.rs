//! The wrapped form of a server entry, whatever the file's format: `command` = the absolute path
//! of `thoth`, `args` = `["run", "--server", NAME, "--client", HOST, EXTRA…, MARKERS…, "--",
//! ORIGINAL_COMMAND, ORIGINAL_ARGS…]`. Markers record what the original entry lacked, so
//! unwrapping restores it exactly: [`NO_ARGS`] (no `args` key) and [`NO_COMMAND`] (no `command`
//! key: an extension's platform override that inherits the base's command).
//!
//! An entry is described here by [`Entry`], a format-free view the format modules build from
//! JSON, JSONC, TOML or an extension manifest; what a rewrite ([`Op`]) does to it is
//! [`decide`]d here, and each format engine only edits its text accordingly.

/// Marks a wrapped entry whose original had no `args` key.
pub const NO_ARGS: &str = "--no-args";
/// Marks a wrapped entry whose original had no `command` key (the command after `--` is
/// inherited: an extension's platform override that sets only `args`).
pub const NO_COMMAND: &str = "--no-command";

/// What to do to a file (re-exported as `format::Op`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Wrap with this absolute thoth path and these extra `thoth run` options before `--`.
    /// `strict` (the agent): a wrapped entry must be exactly in the canonical form, else it is
    /// re-wrapped ([`crate::format::Report::rewrapped`]); not strict (`thoth wrap-config`): only
    /// its thoth path is updated, as a standalone user may have added `--policy` on purpose.
    Wrap {
        /// The `thoth` binary.
        thoth: String,
        /// Options before `--` (see [`canonical_extra`]).
        extra: Vec<String>,
        /// See above.
        strict: bool,
    },
    /// Restore every wrapped entry's original command line.
    Unwrap,
}

impl Op {
    /// A non-strict wrap with no extra options (`thoth wrap-config`).
    pub fn wrap(thoth: impl Into<String>) -> Op {
        Op::Wrap {
            thoth: thoth.into(),
            extra: Vec::new(),
            strict: false,
        }
    }

    /// The agent's wrap: strict, with its own options.
    pub fn wrap_strict(thoth: impl Into<String>, extra: Vec<String>) -> Op {
        Op::Wrap {
            thoth: thoth.into(),
            extra,
            strict: true,
        }
    }

    /// The thoth path a wrap writes (`""` for an unwrap).
    pub fn thoth(&self) -> &str {
        match self {
            Op::Wrap { thoth, .. } => thoth,
            Op::Unwrap => "",
        }
    }
}

/// A server entry, as read from any format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `command`, when it is a string.
    pub command: Option<String>,
    /// `args`, when every element is a string (`None`: no `args` key).
    pub args: Option<Vec<String>>,
    /// The names `env` sets.
    pub env_keys: Vec<String>,
    /// `url` / `serverUrl` / `httpUrl`: a remote server.
    pub url: Option<String>,
    /// `type` / `transport`, as written (`stdio`, `http`, `sse`, `streamable-http`…).
    pub transport: Option<String>,
    /// The entry says it is disabled (`disabled: true`, `enabled: false`).
    pub disabled: bool,
    /// Why the entry cannot be read as a server (not an object, `command` not a string, `args`
    /// not all strings); such an entry is never edited.
    pub malformed: Option<String>,
}

impl Entry {
    /// Builds the view of a JSON entry (JSON, JSONC and manifests share it).
    pub fn from_json(v: &serde_json::Value) -> Entry {
        use serde_json::Value;
        let Some(obj) = v.as_object() else {
            return Entry {
                malformed: Some("the entry is not an object".into()),
                ..Entry::default()
            };
        };
        let mut e = Entry::default();
        match obj.get("command") {
            None => {}
            Some(Value::String(c)) => e.command = Some(c.clone()),
            Some(_) => e.malformed = Some("\"command\" is not a string".into()),
        }
        match obj.get("args") {
            None => {}
            Some(Value::Array(a)) => {
                match a.iter().map(|v| v.as_str().map(str::to_owned)).collect() {
                    Some(v) => e.args = Some(v),
                    None => {
                        e.malformed = Some("\"args\" holds something other than strings".into())
                    }
                }
            }
            Some(_) => e.malformed = Some("\"args\" is not an array".into()),
        }
        e.env_keys = obj
            .get("env")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        e.url = ["url", "serverUrl", "httpUrl"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_str).map(str::to_owned));
        // Only `type` selects a transport (`transport` is no client's key); a `type` that is
        // not a string cannot be read as stdio by any client, so it is not taken for one.
        e.transport = obj.get("type").map(|t| match t {
            Value::String(t) => t.clone(),
            other => format!("(not a string: {other})"),
        });
        e.disabled = obj.get("disabled").and_then(Value::as_bool) == Some(true)
            || obj.get("enabled").and_then(Value::as_bool) == Some(false);
        e
    }

    /// Whether the entry runs elsewhere rather than as a local process: never wrapped. A
    /// `type`/`transport` other than `stdio` decides, whatever else the entry holds (VS Code and
    /// Claude Code connect by their type: a decoy `command` beside `"type": "http"` is never
    /// run, so wrapping it would only make a remote server look governed); without one, an
    /// entry with a URL and no command.
    ///
    /// `stdio` is matched exactly, as VS Code does (`"STDIO"` is not a local server there).
    pub fn is_remote(&self) -> bool {
        match self.transport.as_deref() {
            Some(t) => t != "stdio",
            None => self.command.is_none() && self.url.is_some(),
        }
    }

    /// A local entry that also names a URL: which one a client uses is the client's choice, so
    /// even wrapped it is not counted as governed (see `inventory`).
    pub fn also_names_a_url(&self) -> bool {
        !self.is_remote() && self.command.is_some() && self.url.is_some()
    }

    /// Whether it runs through thoth: `command` is a thoth binary and `args[0]` is `run`.
    pub fn is_wrapped(&self) -> bool {
        let cmd = self.command.as_deref().unwrap_or("");
        let first = self
            .args
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str);
        is_thoth_path(cmd) && first == Some("run")
    }

    /// The loader variables its `env` sets (see [`is_loader_variable`]).
    pub fn loader_variables(&self) -> Vec<String> {
        self.env_keys
            .iter()
            .filter(|k| is_loader_variable(k))
            .cloned()
            .collect()
    }
}

/// Whether a command is a thoth binary (by file name).
pub fn is_thoth_path(cmd: &str) -> bool {
    let base = cmd.rsplit(['/', '\\']).next().unwrap_or(cmd);
    base == "thoth" || base.eq_ignore_ascii_case("thoth.exe")
}

/// Environment variables that make the dynamic loader run other code inside a process
/// (`thoth run` refuses to govern with them; the guardian reports entries that set them).
pub fn is_loader_variable(name: &str) -> bool {
    matches!(name, "LD_PRELOAD" | "LD_AUDIT" | "LD_LIBRARY_PATH") || name.starts_with("DYLD_")
}

/// What the original entry lacked (see the markers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Markers {
    /// No `args` key ([`NO_ARGS`]).
    pub no_args: bool,
    /// No `command` key ([`NO_COMMAND`]).
    pub no_command: bool,
}

/// The arguments before `--` the agent writes for the server `name` of the host `client`
/// (`extra`: the options that reach this agent).
pub fn canonical_head(name: &str, client: &str, extra: &[String], markers: Markers) -> Vec<String> {
    let mut head = vec![
        "run".to_owned(),
        "--server".to_owned(),
        name.to_owned(),
        "--client".to_owned(),
        client.to_owned(),
    ];
    head.extend(extra.iter().cloned());
    if markers.no_command {
        head.push(NO_COMMAND.to_owned());
    }
    if markers.no_args {
        head.push(NO_ARGS.to_owned());
    }
    head
}

/// [`canonical_head`] and the `--` that ends it: what the agent writes before the original
/// command line.
pub fn canonical_prefix(
    name: &str,
    client: &str,
    extra: &[String],
    markers: Markers,
) -> Vec<String> {
    let mut head = canonical_head(name, client, extra, markers);
    head.push("--".to_owned());
    head
}

/// The whole wrapped `args` of an entry whose original command line is `command` and `args`.
pub fn wrapped_args(
    name: &str,
    client: &str,
    extra: &[String],
    markers: Markers,
    command: &str,
    args: &[String],
) -> Vec<String> {
    let mut out = canonical_prefix(name, client, extra, markers);
    out.push(command.to_owned());
    out.extend(args.iter().cloned());
    out
}

/// A wrapped entry's `args`, split: the head before `--`, the original command line after it,
/// and the markers the head carries. `None` when there is no `--` or nothing after it.
pub fn split_wrapped(args: &[String]) -> Option<(&[String], &[String], Markers)> {
    let sep = args.iter().position(|a| a == "--")?;
    let (head, tail) = (&args[..sep], &args[sep + 1..]);
    if tail.is_empty() {
        return None;
    }
    let markers = Markers {
        no_args: head.iter().any(|a| a == NO_ARGS),
        no_command: head.iter().any(|a| a == NO_COMMAND),
    };
    Some((head, tail, markers))
}

/// The original command line of a wrapped entry: (command, args or `None` when it had none),
/// and the markers. `None` when it cannot be read (no `--`, nothing after it, or `--no-args`
/// with arguments after the command).
pub fn original_of(args: &[String]) -> Option<(String, Option<Vec<String>>, Markers)> {
    let (_, tail, markers) = split_wrapped(args)?;
    let (cmd, rest) = tail.split_first()?;
    if markers.no_args && !rest.is_empty() && !markers.no_command {
        return None;
    }
    Some((
        cmd.clone(),
        (!markers.no_args).then(|| rest.to_vec()),
        markers,
    ))
}

/// The command line a wrapped entry runs (everything after the first `--`), whatever its markers
/// say. Unlike [`original_of`], `--no-args` may be followed by arguments: an extension's platform
/// override that sets only `command` is wrapped with `--no-args` (it had no `args` key) and,
/// after its command, the arguments it inherits from the base (see
/// [`crate::format::manifest`]). For display and checks; restoring an entry uses
/// [`original_of`] or the manifest engine.
pub fn inner_line(args: &[String]) -> Option<(String, Vec<String>)> {
    let (_, tail, _) = split_wrapped(args)?;
    let (cmd, rest) = tail.split_first()?;
    Some((cmd.clone(), rest.to_vec()))
}

/// How a wrapped entry's arguments before `--` differ from what the agent would write: `None`
/// when they are exactly the canonical form; else what was added and what is missing, in words
/// (`added --policy /home/ann/allow.yaml; missing --server files`). Any difference is drift: an
/// option before `--` can point the proxy at another policy, socket or state directory.
pub fn wrapper_difference(
    name: &str,
    client: &str,
    args: &[String],
    extra: &[String],
) -> Option<String> {
    let Some(sep) = args.iter().position(|a| a == "--") else {
        return Some("no \"--\" before the server's command".into());
    };
    let Some((head, _, markers)) = split_wrapped(args) else {
        return Some("no server command after \"--\"".into());
    };
    debug_assert_eq!(head.len(), sep);
    let canonical = canonical_head(name, client, extra, markers);
    if head == canonical.as_slice() {
        return None;
    }
    // Compared option by option (`--flag value` is one), so the difference reads as written.
    let canonical: Vec<&str> = canonical.iter().map(String::as_str).collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut missing = options(&canonical);
    let mut added = Vec::new();
    for o in options(&head) {
        match missing.iter().position(|m| *m == o) {
            Some(i) => {
                missing.remove(i);
            }
            None => added.push(o),
        }
    }
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("added {}", added.join(" ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(" ")));
    }
    if parts.is_empty() {
        parts.push(format!("options reordered ({})", head.join(" ")));
    }
    Some(parts.join("; "))
}

/// Arguments grouped into options: `--flag value` is one, a lone word or `--switch` another.
fn options(args: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        let takes_value =
            a.starts_with("--") && a != NO_ARGS && a != NO_COMMAND && !a.contains('=');
        match args.get(i + 1) {
            Some(v) if takes_value && !v.starts_with("--") => {
                out.push(format!("{a} {v}"));
                i += 2;
            }
            _ => {
                out.push(a.to_owned());
                i += 1;
            }
        }
    }
    out
}

/// How a wrapped entry's command differs from the agent's `thoth` (its canonical path), if it
/// does.
pub fn command_difference(entry: &Entry, thoth: &str) -> Option<String> {
    let cmd = entry.command.as_deref().unwrap_or("");
    (cmd != thoth).then(|| format!("command {cmd} instead of {thoth}"))
}

/// How a wrapped entry differs from what the agent writes (its command `thoth`, and the
/// canonical arguments before `--`), in words: [`command_difference`] and
/// [`wrapper_difference`] together. `None`: exactly the canonical form.
pub fn drift(
    entry: &Entry,
    name: &str,
    client: &str,
    thoth: &str,
    extra: &[String],
) -> Option<String> {
    let args = wrapper_difference(name, client, entry.args.as_deref().unwrap_or(&[]), extra);
    match (command_difference(entry, thoth), args) {
        (Some(c), Some(a)) => Some(format!("{c}; {a}")),
        (c, a) => c.or(a),
    }
}

/// An entry a rewrite leaves as it is, and how it is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// Reported as skipped, for this reason.
    Skipped(String),
    /// Remote (a URL, HTTP or SSE): reported as remote.
    Remote,
    /// Already wrapped as asked: reported as already.
    Already,
    /// An unwrap of an entry that is not wrapped: not reported.
    Unchanged,
}

/// What a rewrite does to one entry, whatever the file's format (see [`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Left as it is.
    Leave(Left),
    /// Edited: the engine writes the change in its own text.
    Change(Change),
}

/// An edit of an entry's `command` and `args`, to be written by a format engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A wrapper around another thoth (not strict): `command` becomes thoth (reported as
    /// updated).
    Update,
    /// A wrapper not in the canonical form (strict): `command` becomes thoth and the first `keep`
    /// elements of `args` (the old head and its `--`) become `head` (the canonical head and
    /// `--`); the command after the first `--` is kept. Reported as rewrapped, with `diff`.
    Rewrap {
        /// What differed, in words.
        diff: String,
        /// How many elements of `args` are replaced.
        keep: usize,
        /// What replaces them.
        head: Vec<String>,
    },
    /// Not wrapped: `command` becomes thoth, and `head` (the canonical head and `--`) and the
    /// original `command` go in front of the `args` (added, marked `--no-args`, when the entry
    /// has none). Reported as wrapped.
    Wrap {
        /// The elements before the command.
        head: Vec<String>,
        /// The original command.
        command: String,
    },
    /// Wrapped: the original command line comes back. Reported as unwrapped.
    Unwrap {
        /// The original command, element `sep + 1` of `args`.
        command: String,
        /// The position of the `--` in `args`: the wrapper's elements are the first `sep + 2`.
        sep: usize,
        /// What the original lacked (`no_args`: remove `args`; `no_command`: remove
        /// `command`).
        markers: Markers,
    },
}

/// What `op` does to `entry`, the server `server` of the host `client`. A malformed entry is
/// skipped; a remote one is left alone (by its type even with a command beside it; an old
/// wrapper on such an entry is still taken out by unwrap).
pub fn decide(entry: &Entry, server: &str, client: &str, op: &Op) -> Decision {
    use Decision::Leave;
    if let Some(why) = &entry.malformed {
        return Leave(Left::Skipped(why.clone()));
    }
    if entry.is_remote() && !(matches!(op, Op::Unwrap) && entry.is_wrapped()) {
        return Leave(Left::Remote);
    }
    let Some(command) = &entry.command else {
        return Leave(if entry.is_remote() {
            Left::Remote
        } else {
            Left::Skipped("no \"command\" and no URL".into())
        });
    };
    let all = entry.args.as_deref().unwrap_or(&[]);
    match op {
        Op::Wrap {
            thoth,
            extra,
            strict,
        } if entry.is_wrapped() => {
            // Strict (the agent): another `thoth` than the agent's is drift too, not a path to
            // update quietly (a binary named `thoth` may be anything).
            let diff = strict
                .then(|| drift(entry, server, client, thoth, extra))
                .flatten();
            match diff {
                Some(diff) => {
                    // Re-wrapped around the command after the first `--`, whatever came before.
                    let Some((head, _, markers)) = split_wrapped(all) else {
                        return Leave(Left::Skipped(format!(
                            "a thoth wrapper with {diff}, and no command to keep"
                        )));
                    };
                    let keep = head.len() + 1;
                    let head = canonical_prefix(server, client, extra, markers);
                    Decision::Change(Change::Rewrap { diff, keep, head })
                }
                None if command == thoth => Leave(Left::Already),
                None => Decision::Change(Change::Update),
            }
        }
        Op::Wrap { extra, .. } => {
            let markers = Markers {
                no_args: entry.args.is_none(),
                no_command: false,
            };
            Decision::Change(Change::Wrap {
                head: canonical_prefix(server, client, extra, markers),
                command: command.clone(),
            })
        }
        Op::Unwrap if !entry.is_wrapped() => Leave(Left::Unchanged),
        Op::Unwrap => match original_of(all) {
            Some((command, args, markers)) => Decision::Change(Change::Unwrap {
                sep: all.len() - args.map_or(0, |a| a.len()) - 2,
                command,
                markers,
            }),
            None => Leave(Left::Skipped(
                "wrapped, but its original command line cannot be read".into(),
            )),
        },
    }
}

/// Why an entry is not governed as the agent would leave it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGoverned {
    /// `thoth run` is not in front of the server.
    #[error("not wrapped")]
    NotWrapped,
    /// The wrapper's command or its arguments before `--` differ from the canonical form (in
    /// words, from [`command_difference`] or [`wrapper_difference`]).
    #[error("wrapper altered: {0}")]
    WrapperAltered(String),
    /// The entry's `env` sets loader variables (see [`is_loader_variable`]).
    #[error("env sets {}", .0.join(", "))]
    LoaderVariables(Vec<String>),
}

/// Whether an entry is governed as the agent would leave it: wrapped, running the agent's own
/// `thoth` (`thoth`: its canonical path; a binary that is merely named `thoth` may be anything),
/// with the canonical arguments before `--` (naming `name` and `client`), and no loader variable
/// in its `env`. `Err` says why not.
pub fn governed(
    name: &str,
    client: &str,
    entry: &Entry,
    thoth: &str,
    extra: &[String],
) -> Result<(), NotGoverned> {
    if !entry.is_wrapped() {
        return Err(NotGoverned::NotWrapped);
    }
    if let Some(diff) = command_difference(entry, thoth) {
        return Err(NotGoverned::WrapperAltered(diff));
    }
    let args = entry.args.as_deref().unwrap_or(&[]);
    if let Some(diff) = wrapper_difference(name, client, args, extra) {
        return Err(NotGoverned::WrapperAltered(diff));
    }
    let vars = entry.loader_variables();
    if !vars.is_empty() {
        return Err(NotGoverned::LoaderVariables(vars));
    }
    Ok(())
}

/// The extra `thoth run` options a wrapped entry needs to reach the agent at `socket` with its
/// state in `state_dir` (none for the defaults): part of the canonical form.
pub fn canonical_extra(socket: &std::path::Path, state_dir: &std::path::Path) -> Vec<String> {
    let mut extra = Vec::new();
    if socket != std::path::Path::new(thoth_endpoint::config::DEFAULT_SOCKET) {
        extra.push("--agent-socket".into());
        extra.push(socket.display().to_string());
    }
    if state_dir != std::path::Path::new(thoth_endpoint::config::DEFAULT_STATE_DIR) {
        extra.push("--state-dir".into());
        extra.push(state_dir.display().to_string());
    }
    extra
}

#[cfg(test)]
#[path = "wrapper_tests.rs"]
mod tests;
