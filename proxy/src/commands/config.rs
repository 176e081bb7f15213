//! `thoth wrap-config` and `thoth unwrap-config`, for every MCP client ([`thoth_hosts::host`]).

use std::path::{Path, PathBuf};

use crate::cli::ConfigArgs;
use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::Op;
use thoth_hosts::host::{self, Host, Os};

/// This user's home (`$HOME`; on Windows `%USERPROFILE%`).
pub(crate) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The host named by `--client`; an unknown id is an error listing the known ones.
pub(crate) fn host_by_id(id: &str) -> anyhow::Result<&'static dyn Host> {
    host::by_id(id).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown MCP client {id:?}: --client takes one of {}",
            host::ids()
        )
    })
}

/// The host whose file `path` is: by its place under `home` ([`host::host_of`]), else by a name
/// and place only one host uses (`claude_desktop_config.json`, `.claude.json`, `.mcp.json`,
/// `mcp_config.json`, `.cursor/mcp.json`, `.vscode/mcp.json`, `User/mcp.json` or
/// `User/settings.json` of VS Code, `.codex/config.toml`, a `manifest.json` under
/// `Claude Extensions`).
pub(crate) fn guess_host(path: &Path, home: Option<&Path>) -> Option<&'static dyn Host> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(home) = home {
        for p in [
            abs.clone(),
            std::fs::canonicalize(path).unwrap_or(abs.clone()),
        ] {
            if let Some(h) = host::host_of(&p, home) {
                return Some(h);
            }
        }
    }
    let name = abs.file_name()?.to_str()?;
    let dir = |n: usize| {
        abs.ancestors()
            .nth(n)
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or("")
    };
    let under = |d: &str| {
        abs.ancestors()
            .skip(1)
            .any(|a| a.file_name().is_some_and(|n| n == d))
    };
    let id = match (name, dir(1)) {
        ("claude_desktop_config.json", _) => "claude-desktop",
        (".claude.json" | ".mcp.json", _) => "claude-code",
        ("mcp_config.json", "windsurf") => "windsurf",
        ("manifest.json", _) if under("Claude Extensions") => "claude-extension",
        ("mcp.json", ".cursor") => "cursor",
        ("mcp.json", ".vscode") => "vscode",
        ("mcp.json" | "settings.json", "User") if dir(2).starts_with("Code") => "vscode",
        ("config.toml", ".codex") => "codex",
        _ => return None,
    };
    host::by_id(id)
}

/// Runs either command; returns the exit code (0 done, 1 refused or failed).
pub fn run(args: &ConfigArgs, wrap: bool) -> anyhow::Result<i32> {
    let verb = if wrap { "wrap" } else { "unwrap" };
    let named = args.client.as_deref().map(host_by_id).transpose()?;
    let home = home();
    let files: Vec<(&'static dyn Host, PathBuf)> = match (&args.file, named) {
        (Some(f), Some(h)) => vec![(h, f.clone())],
        (Some(f), None) => match guess_host(f, home.as_deref()) {
            Some(h) => vec![(h, f.clone())],
            None => anyhow::bail!(
                "cannot tell which MCP client {} belongs to: say it with --client ({})",
                f.display(),
                host::ids()
            ),
        },
        (None, h) => {
            let h = h.unwrap_or(&thoth_hosts::clients::claude_desktop::ClaudeDesktop);
            let Some(home) = &home else {
                anyhow::bail!("HOME is not set: pass the file");
            };
            let files = h.files(home, Os::current());
            if files.is_empty() {
                eprintln!(
                    "{} has no config for this user yet (looked under {}), so there is nothing to {verb}",
                    h.name(),
                    home.display()
                );
                return Ok(1);
            }
            files.into_iter().map(|f| (h, f)).collect()
        }
    };
    let op = if wrap {
        let thoth = match &args.thoth {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let thoth = std::fs::canonicalize(&thoth).unwrap_or(thoth);
        if !thoth.is_absolute() {
            anyhow::bail!("--thoth must be an absolute path");
        }
        Op::wrap(thoth.display().to_string())
    } else {
        Op::Unwrap
    };
    let several = files.len() > 1;
    let mut code = 0;
    for (h, path) in &files {
        if several {
            println!("{} ({}):", path.display(), h.name());
        }
        if !path.exists() {
            eprintln!(
                "{} does not exist: {} has no config there, so there is nothing to {verb}",
                path.display(),
                h.name()
            );
            code = 1;
            continue;
        }
        if one_file(*h, path, &op, args.dry_run) != 0 {
            code = 1;
        }
    }
    Ok(code)
}

/// Rewrites one file and prints what happened; returns its exit code.
fn one_file(h: &dyn Host, path: &Path, op: &Op, dry_run: bool) -> i32 {
    match file::rewrite_file(h, path, op, dry_run) {
        Ok(out) => {
            let r = &out.report;
            if dry_run {
                let d = file::diff(path, &out.before, &out.after);
                if d.is_empty() {
                    println!("{}: nothing to change", path.display());
                } else {
                    print!("{d}");
                }
            }
            for (label, names) in [
                ("wrapped", &r.wrapped),
                ("already governed", &r.already),
                ("updated to this thoth", &r.updated),
                ("unwrapped", &r.unwrapped),
                (
                    "left alone (remote: runs elsewhere, cannot be wrapped)",
                    &r.remote,
                ),
            ] {
                if !names.is_empty() {
                    println!("{label}: {}", names.join(", "));
                }
            }
            for (name, why) in &r.rewrapped {
                println!("rewrapped: {name} ({why})");
            }
            for (name, why) in &r.skipped {
                println!("left alone: {name}: {why}");
            }
            if out.written {
                println!("{} updated; to apply it: {}", path.display(), h.pickup());
            } else if !dry_run {
                println!("{}: nothing to change", path.display());
            }
            0
        }
        Err(e @ (FileError::Config { .. } | FileError::NotUtf8 { .. })) => {
            eprintln!("thoth: {e}\nthe file was not changed");
            1
        }
        Err(e) => {
            eprintln!("thoth: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::guess_host;
    use std::path::Path;

    fn guess(p: &str) -> Option<&'static str> {
        guess_host(Path::new(p), None).map(|h| h.id())
    }

    #[test]
    fn a_file_names_its_client_only_when_no_other_client_uses_that_name_and_place() {
        let cases = [
            ("/x/claude_desktop_config.json", Some("claude-desktop")),
            ("/home/a/.claude.json", Some("claude-code")),
            ("/src/p/.mcp.json", Some("claude-code")),
            (
                "/home/a/.codeium/windsurf/mcp_config.json",
                Some("windsurf"),
            ),
            ("/home/a/.cursor/mcp.json", Some("cursor")),
            ("/src/p/.vscode/mcp.json", Some("vscode")),
            ("/h/.config/Code/User/settings.json", Some("vscode")),
            ("/h/.config/Code - Insiders/User/mcp.json", Some("vscode")),
            ("/h/.codex/config.toml", Some("codex")),
            (
                "/h/Claude/Claude Extensions/ant.dir.x/manifest.json",
                Some("claude-extension"),
            ),
            ("/srv/www/manifest.json", None),
            ("/h/mcp.json", None),
            ("/h/.config/Other/User/settings.json", None),
            ("/h/config.toml", None),
        ];
        for (p, want) in cases {
            assert_eq!(guess(p), want, "{p}");
        }
    }
}
