//! `thoth-installer uninstall`: stop and unregister the service, give every user's MCP client
//! configs (every client the agent manages) their original entries back, remove what install
//! recorded.

use std::path::{Path, PathBuf};

use thoth_hosts::file::{self as hosts_file, FileError};
use thoth_hosts::format::Op;
use thoth_hosts::host::{HostFilter, discover};

use crate::error::InstallerError;
use crate::layout::{Layout, Platform};
use crate::manifest::Manifest;
use crate::service;

pub(crate) fn uninstall(l: &Layout, keep_data: bool) -> Result<u8, InstallerError> {
    let Ok(text) = std::fs::read_to_string(l.manifest()) else {
        say!("thoth is not installed under {}", l.root.display());
        return Ok(0);
    };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|source| InstallerError::Manifest {
            path: l.manifest(),
            source,
        })?;
    if l.system {
        for f in service::run(&service::stop_plan(l)) {
            eprintln!("thoth-installer: {f}");
        }
        service::wait_stopped(l);
    }
    // Every user's MCP client configs (every client the agent manages) back to their original
    // entries. A client that rewrites its own file (Claude Code) may hold it for a moment: a
    // raced rewrite is tried again.
    let mut restored = 0;
    let homes = hosts_file::homes(Some(&l.users_root()));
    for f in discover(&homes, &HostFilter::all()) {
        let mut attempt = 0;
        loop {
            // As the home's owner: a file reached through another user's directory is not
            // this home's to restore.
            let opts = hosts_file::Options {
                owner: thoth_hosts::host::home_owner(&f.home),
                ..hosts_file::Options::default()
            };
            match hosts_file::rewrite_file_with(f.host, &f.path, &Op::Unwrap, &opts) {
                Ok(o) if o.written => restored += 1,
                Ok(_) => {}
                Err(FileError::Raced { .. }) if attempt < 10 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
                Err(e) => eprintln!("thoth-installer: {}: {e} (left as it was)", f.host.name()),
            }
            break;
        }
    }
    // Every file, going on past failures (so one locked file does not leave the rest), and
    // never the running installer itself (Windows cannot delete a running .exe; the package
    // manager that put it there removes it).
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let mut failures: Vec<InstallerError> = Vec::new();
    let files: Vec<PathBuf> = manifest.files.iter().map(|f| l.real_path(f)).collect();
    let mut left: Vec<PathBuf> = Vec::new();
    for f in &files {
        if keep_data
            && f.starts_with(l.etc())
            && !f.starts_with(l.state())
            && !f.starts_with(l.bin_dir())
        {
            continue;
        }
        if here.is_some() && f.canonicalize().ok() == here && cfg!(windows) {
            continue;
        }
        match std::fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                failures.push(InstallerError::io(f, e));
                left.push(f.clone());
            }
        }
    }
    if keep_data {
        let _ = std::fs::remove_file(l.manifest());
    } else {
        for dir in [Some(l.state()), Some(l.etc())]
            .into_iter()
            .chain([l.log_file().and_then(|f| f.parent().map(Path::to_path_buf))])
            .flatten()
        {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => failures.push(InstallerError::io(&dir, e)),
            }
        }
    }
    // The directory that held only our binaries (Windows: Program Files\Thoth).
    if l.platform == Platform::Windows {
        let _ = std::fs::remove_dir(l.bin_dir());
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("thoth-installer: {f}");
        }
        // What is left stays on record, so running uninstall again finishes the job.
        if !left.is_empty() {
            let rest = Manifest {
                files: left.iter().map(|f| l.seen_path(f)).collect(),
                ..manifest
            };
            if let Ok(json) = serde_json::to_string_pretty(&rest) {
                let _ = thoth_endpoint::state::write_atomic(&l.manifest(), json.as_bytes(), 0o644);
            }
        }
        return Err(InstallerError::FilesLeft {
            root: l.root.clone(),
            failures,
            restored,
        });
    }
    say!(
        "uninstalled thoth from {}; {restored} MCP client config(s) restored{}",
        l.root.display(),
        if keep_data {
            "; settings and identity kept"
        } else {
            ""
        }
    );
    Ok(0)
}
