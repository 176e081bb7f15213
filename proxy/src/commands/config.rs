//! `thoth wrap-config` and `thoth unwrap-config`.

use crate::cli::ConfigArgs;
use thoth_hosts::clients::claude_desktop::{self, ClaudeDesktop};
use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::Op;

/// Runs either command; returns the exit code (0 done, 1 refused or failed).
pub fn run(args: &ConfigArgs, wrap: bool) -> anyhow::Result<i32> {
    let Some(path) = args.file.clone().or_else(claude_desktop::default_path) else {
        anyhow::bail!("cannot find this user's Claude Desktop config: pass the file");
    };
    if !path.exists() {
        eprintln!(
            "{} does not exist: Claude Desktop has no config for this user yet, so there is nothing to {}",
            path.display(),
            if wrap { "wrap" } else { "unwrap" }
        );
        return Ok(1);
    }
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
    match file::rewrite_file(&ClaudeDesktop, &path, &op, args.dry_run) {
        Ok(out) => {
            let r = &out.report;
            if args.dry_run {
                let d = file::diff(&path, &out.before, &out.after);
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
                ("left alone (remote, no command)", &r.remote),
            ] {
                if !names.is_empty() {
                    println!("{label}: {}", names.join(", "));
                }
            }
            for (name, why) in &r.skipped {
                println!("left alone: {name}: {why}");
            }
            if out.written {
                println!(
                    "{} updated; restart Claude Desktop to apply it",
                    path.display()
                );
            } else if !args.dry_run {
                println!("{}: nothing to change", path.display());
            }
            Ok(0)
        }
        Err(e @ (FileError::Config { .. } | FileError::NotUtf8 { .. })) => {
            eprintln!("thoth: {e}\nthe file was not changed");
            Ok(1)
        }
        Err(e) => {
            eprintln!("thoth: {e}");
            Ok(1)
        }
    }
}
