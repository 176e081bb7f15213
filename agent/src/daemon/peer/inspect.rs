//! Looking at a process from outside (Linux: `/proc/<pid>`): its executable, its original
//! environment block, the code it has mapped, its namespaces; each read bounded. [`verify`] gives
//! the verdict.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::process::Process;
#[cfg(target_os = "linux")]
use super::process::start_time;
use super::verdict::{Kind, Verdict};

/// Most bytes of `/proc/<pid>/maps` read; a larger map is refused as unverifiable (a `thoth`
/// maps some tens of KiB).
pub const MAX_MAPS_BYTES: u64 = 1 << 20;
/// Most executable file mappings examined; more are refused as unverifiable.
pub const MAX_CODE_MAPPINGS: usize = 2048;
/// Most bytes of `/proc/<pid>/environ` read; a larger block is refused as unverifiable.
pub const MAX_ENVIRON_BYTES: u64 = 4 << 20;
/// Names (paths, variables) a refusal's reason lists; the rest are counted.
const MAX_NAMED: usize = 8;
/// Longest name (in characters) a reason lists as it is; longer ones are cut.
const MAX_NAME_CHARS: usize = 256;

/// A name as a reason lists it: at most [`MAX_NAME_CHARS`] characters.
fn clip(name: &str) -> String {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        None => name.to_owned(),
        Some((i, _)) => format!("{}…", &name[..i]),
    }
}

/// The first [`MAX_NAMED`] of `names` (each clipped), and how many more there are.
fn list(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(MAX_NAMED)
        .map(|n| clip(n))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMED {
        out.push_str(&format!(" and {} more", names.len() - MAX_NAMED));
    }
    out
}

/// At most `limit` bytes of the file at `path`; `None` when it holds more.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut out)?;
    Ok((out.len() as u64 <= limit).then_some(out))
}

/// The `(major, minor)` device numbers of `dev` (an `st_dev`), as `/proc/<pid>/maps` shows them.
fn major_minor(dev: u64) -> (u64, u64) {
    (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    )
}

/// A file's identity as `/proc/<pid>/maps` shows it: device (major, minor) and inode.
type FileId = (u64, u64, u64);

#[cfg(target_os = "linux")]
fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    let (major, minor) = major_minor(m.dev());
    (major, minor, m.ino())
}

/// Checks the process behind a connection against the installed `thoth` at `thoth`; `known`
/// holds the (`st_dev`, inode) pairs the agent has seen at that path (so a proxy still running
/// a binary an upgrade replaced is recognised). Blocking: reads `/proc`, within bounds
/// ([`MAX_MAPS_BYTES`], [`MAX_CODE_MAPPINGS`], [`MAX_ENVIRON_BYTES`]).
#[cfg(target_os = "linux")]
pub fn verify(process: Option<Process>, thoth: &Path, known: &[(u64, u64)]) -> Verdict {
    let Some(p) = process else {
        return Verdict::Refused(
            Kind::Unverifiable,
            "the calling process could not be identified (it exited, or runs in another pid \
             namespace)"
                .into(),
        );
    };
    let proc = PathBuf::from(format!("/proc/{}", p.pid));
    let mut found: Vec<(Kind, String)> = Vec::new();
    let unverifiable = |what: &str, e: std::io::Error| {
        Verdict::Refused(
            Kind::Unverifiable,
            format!("cannot read {what} of process {}: {e}", p.pid),
        )
    };
    let too_large = |what: &str| {
        Verdict::Refused(
            Kind::Unverifiable,
            format!("{what} of process {} is too large to check", p.pid),
        )
    };
    // Its namespaces: an unprivileged user can remount (bind another binary over the installed
    // thoth's path, hide a directory) only inside a user namespace of their own, where this
    // agent's view of paths says nothing. A proxy Claude Desktop starts runs in the agent's.
    if let Some(why) = other_namespace(&proc) {
        return Verdict::Refused(Kind::Unverifiable, why);
    }
    // The executable.
    let exe_link = match std::fs::read_link(proc.join("exe")) {
        Ok(l) => l,
        Err(e) => return unverifiable("the executable", e),
    };
    let exe = match exe_is_thoth(&proc.join("exe"), &exe_link, thoth, known) {
        Ok((true, id)) => Some(id),
        Ok((false, _)) => {
            found.push((
                Kind::NotInstalledThoth,
                format!(
                    "it runs {}, not the installed thoth ({})",
                    clip(&exe_link.display().to_string()),
                    thoth.display()
                ),
            ));
            None
        }
        Err(e) => return unverifiable("the executable", e),
    };
    // The environment block it started with.
    let environ = match read_bounded(&proc.join("environ"), MAX_ENVIRON_BYTES) {
        Ok(Some(b)) => b,
        Ok(None) => return too_large("the environment"),
        Err(e) => return unverifiable("the environment", e),
    };
    let vars = loader_variables(&environ);
    drop(environ);
    if !vars.is_empty() {
        found.push((
            Kind::LoaderVariable,
            format!("its environment sets {}", list(&vars)),
        ));
    }
    // The code it has mapped.
    let maps = match read_bounded(&proc.join("maps"), MAX_MAPS_BYTES) {
        Ok(Some(m)) => match String::from_utf8(m) {
            Ok(m) => m,
            Err(e) => return unverifiable("the memory map", std::io::Error::other(e)),
        },
        Ok(None) => return too_large("the memory map"),
        Err(e) => return unverifiable("the memory map", e),
    };
    let bad = match writable_code(&proc, &maps, exe) {
        Ok(bad) => bad,
        Err(n) => {
            return Verdict::Refused(
                Kind::Unverifiable,
                format!(
                    "process {} maps code from over {n} places, too many to check",
                    p.pid
                ),
            );
        }
    };
    drop(maps);
    if !bad.is_empty() {
        found.push((
            Kind::Library,
            format!(
                "it runs code from {} (a non-root user can write there)",
                list(&bad)
            ),
        ));
    }
    // Still the process that connected (not a pid reused since)?
    if start_time(p.pid) != Some(p.start) {
        return Verdict::Refused(
            Kind::Unverifiable,
            format!("process {} exited while it was checked", p.pid),
        );
    }
    match found.first() {
        None => Verdict::Verified,
        Some((kind, _)) => Verdict::Refused(
            *kind,
            found
                .iter()
                .map(|(_, s)| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Not checked on other systems (macOS: no `/proc`; a `proc_pidpath` and `DYLD_*` check would
/// go here).
#[cfg(not(target_os = "linux"))]
pub fn verify(_process: Option<Process>, _thoth: &Path, _known: &[(u64, u64)]) -> Verdict {
    Verdict::Unchecked
}

/// Why the process at `proc` does not share the agent's user namespace, or its mount namespace
/// with the agent or with pid 1 (the agent's service may have a mount namespace of its own), if
/// it does not.
#[cfg(target_os = "linux")]
fn other_namespace(proc: &Path) -> Option<String> {
    let ns = |dir: &Path, which: &str| std::fs::read_link(dir.join("ns").join(which)).ok();
    let me = Path::new("/proc/self");
    if let Some(mine) = ns(me, "user")
        && ns(proc, "user").as_ref() != Some(&mine)
    {
        return Some(
            "it runs in another user namespace than the agent (a proxy Claude Desktop starts \
             runs in the agent's)"
                .into(),
        );
    }
    if let Some(mine) = ns(me, "mnt") {
        let theirs = ns(proc, "mnt");
        if theirs.is_none()
            || (theirs.as_ref() != Some(&mine) && theirs != ns(Path::new("/proc/1"), "mnt"))
        {
            return Some(
                "it runs in another mount namespace than the system's (a proxy Claude Desktop \
                 starts runs in the system's)"
                    .into(),
            );
        }
    }
    None
}

/// Whether the executable behind `exe` (`/proc/<pid>/exe`, whose target is `link`) is the
/// installed `thoth`: the same file, or (after an upgrade replaced it while the proxy ran) a
/// deleted (no links left) root-owned file the agent saw at that path (`known`), or, for one it
/// did not see (the agent restarted since), that was at that path in a root-owned directory.
/// With the file's identity as the memory map shows it.
#[cfg(target_os = "linux")]
fn exe_is_thoth(
    exe: &Path,
    link: &Path,
    thoth: &Path,
    known: &[(u64, u64)],
) -> std::io::Result<(bool, FileId)> {
    use std::os::unix::fs::MetadataExt;
    let running = std::fs::metadata(exe)?;
    let id = file_id(&running);
    if let Ok(installed) = std::fs::metadata(thoth)
        && (installed.dev(), installed.ino()) == (running.dev(), running.ino())
    {
        return Ok((true, id));
    }
    // A bind mount or another link of a root-owned binary has links left; a replaced one not.
    let replaced_root_file =
        running.nlink() == 0 && running.uid() == 0 && running.mode() & 0o022 == 0;
    if !replaced_root_file {
        return Ok((false, id));
    }
    if known.contains(&(running.dev(), running.ino())) {
        return Ok((true, id));
    }
    let replaced = format!("{} (deleted)", thoth.display());
    Ok((
        link.as_os_str() == replaced.as_str()
            && thoth
                .parent()
                .is_some_and(thoth_endpoint::state::root_owned),
        id,
    ))
}

/// The loader variables set (non-empty) in a NUL-separated environment block.
/// `LD_LIBRARY_PATH` is judged by what was loaded from it ([`writable_code`]), as `thoth run`
/// does: test runners set it to directories holding nothing of ours.
fn loader_variables(environ: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|b| *b == b'=')?;
            let name = std::str::from_utf8(&kv[..eq]).ok()?;
            (eq + 1 < kv.len()
                && name != "LD_LIBRARY_PATH"
                && thoth_hosts::wrapper::is_loader_variable(name))
            .then(|| name.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The files of executable mappings in `maps` (of the process at `proc`) that a non-root user
/// could have written: owned by one, writable by group or others, in a directory one can
/// write, or anonymous (`memfd`); and executable memory no file backs. The executable itself (`exe`: device and inode, as the map
/// shows them) is judged by [`exe_is_thoth`]. `Err` with the limit when there are more than
/// [`MAX_CODE_MAPPINGS`] executable file mappings.
#[cfg(target_os = "linux")]
fn writable_code(proc: &Path, maps: &str, exe: Option<FileId>) -> Result<Vec<String>, usize> {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: HashMap<PathBuf, bool> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut bad: Vec<String> = Vec::new();
    let mut code = 0usize;
    for line in maps.lines() {
        // address perms offset dev inode path (the path may hold spaces)
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(_), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("").trim_start();
        if !perms.contains('x') {
            continue;
        }
        // Executable memory no file backs (a `thoth` has none; a library that copied its code
        // there and unmapped its file has). The kernel's own (`[vdso]`) are not.
        if inode == "0" && (path.is_empty() || path.starts_with("[anon")) {
            if seen.insert("") {
                bad.push("anonymous executable memory".to_owned());
            }
            continue;
        }
        if inode == "0" || !path.starts_with('/') {
            continue;
        }
        code += 1;
        if code > MAX_CODE_MAPPINGS {
            return Err(MAX_CODE_MAPPINGS);
        }
        let id = dev.split_once(':').and_then(|(major, minor)| {
            Some((
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
                inode.parse::<u64>().ok()?,
            ))
        });
        if id.is_some() && id == exe {
            continue;
        }
        if !seen.insert(path) {
            continue;
        }
        let name = path.strip_suffix(" (deleted)").unwrap_or(path);
        let file_ok = if name.starts_with("/memfd:") {
            false
        } else {
            // The mapped file itself (root only may read these links), else the file now at
            // its path.
            let meta = std::fs::metadata(proc.join("map_files").join(range))
                .or_else(|_| std::fs::metadata(name));
            match meta {
                Ok(m) => m.uid() == 0 && m.mode() & 0o022 == 0,
                // Gone since: its directory decides.
                Err(_) => true,
            }
        };
        let mut dir_ok = || {
            let dir = Path::new(name)
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            *dirs
                .entry(dir.clone())
                .or_insert_with(|| thoth_endpoint::state::root_owned(&dir))
        };
        if !(file_ok && dir_ok()) {
            bad.push(path.to_owned());
        }
    }
    Ok(bad)
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
