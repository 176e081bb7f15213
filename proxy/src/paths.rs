//! Path arguments resolved as the server will see them, for `path_glob` constraints: the longest
//! existing prefix is canonicalised (symlinks followed), the rest is taken lexically. The policy
//! crate matches; this is the IO it does not do.
//!
//! A path is checked in both ways a server may read it: component by component as the kernel
//! walks it (`link/..` is the parent of the link's target) and normalized first, then resolved
//! (what Node's `path.resolve` + `realpath` do). Every result must be allowed.
//!
//! What stays open: the decision and the server's use of the path are two moments. A symlink
//! created or swapped in between (by someone who can write inside the allowed tree) is not seen;
//! closing that needs the server itself to open with `O_NOFOLLOW`/`openat2(RESOLVE_BENEATH)`.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use thoth_policy::{PathResolver, ResolveError};

/// Follows symlinks on the local file system, relative paths from the proxy's working
/// directory (which the server inherits).
#[derive(Debug, Clone, Copy, Default)]
pub struct FsResolver;

/// Symlinks followed at most, over a whole path (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

impl PathResolver for FsResolver {
    fn resolve(&self, path: &str) -> Result<Vec<String>, ResolveError> {
        if path.contains('\0') {
            return Err(ResolveError::Nul);
        }
        if cfg!(not(unix)) {
            return thoth_policy::Lexical.resolve(path);
        }
        let p = Path::new(path);
        let (base, relative) = if p.is_absolute() {
            (PathBuf::from("/"), false)
        } else {
            let cwd = std::env::current_dir().map_err(ResolveError::WorkingDir)?;
            (cwd, true)
        };
        // One link budget for the whole resolution, however the walks nest.
        let mut links = 0usize;
        let walked = walk(&base, p, &mut links)?;
        let mut out = vec![walked];
        // Normalized first: `..` removes the component before it, whatever that is.
        if p.components().any(|c| c == Component::ParentDir) {
            let lexical = thoth_policy::Lexical.resolve(&base.join(p).to_string_lossy())?;
            let lexical = walk(Path::new("/"), Path::new(&lexical[0]), &mut 0)?;
            if lexical != out[0] {
                out.push(lexical);
            }
        }
        let cwd_real = if relative {
            Some(walk(Path::new("/"), &base, &mut 0)?)
        } else {
            None
        };
        Ok(out
            .into_iter()
            .map(|r| shown(&r, cwd_real.as_deref()))
            .collect())
    }
}

/// A resolved path as the policy sees it: relative to the working directory when the argument
/// was relative and it stays inside, else absolute.
fn shown(r: &Path, cwd: Option<&Path>) -> String {
    if let Some(cwd) = cwd
        && let Ok(rest) = r.strip_prefix(cwd)
    {
        let rest = rest.to_string_lossy();
        return if rest.is_empty() {
            ".".into()
        } else {
            rest.into_owned()
        };
    }
    r.to_string_lossy().into_owned()
}

/// Walks `path` from `base` (itself canonical or treated as such): each component is looked up
/// while the path so far exists (a symlink is replaced by its canonical target); from the first
/// missing component on, the rest is lexical. `links` counts the symlinks followed so far, in
/// this walk and in every walk it started for a dangling link's target (each of which may come
/// back to the same link: `a -> x/../a` with `x` missing), so a cycle ends at [`MAX_LINKS`].
fn walk(base: &Path, path: &Path, links: &mut usize) -> Result<PathBuf, ResolveError> {
    // The root is its own canonical form: no system call for the common absolute path.
    let mut cur = if base == Path::new("/") {
        PathBuf::from("/")
    } else {
        match std::fs::canonicalize(base) {
            Ok(b) => b,
            Err(_) => base.to_path_buf(),
        }
    };
    let mut tail: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {
                cur = PathBuf::from("/");
                tail.clear();
            }
            Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                if tail.pop().is_none() {
                    cur.pop();
                }
            }
            Component::Normal(name) => {
                if !tail.is_empty() {
                    tail.push(name);
                    continue;
                }
                let next = cur.join(name);
                match std::fs::symlink_metadata(&next) {
                    Ok(m) if m.file_type().is_symlink() => {
                        *links += 1;
                        if *links > MAX_LINKS {
                            return Err(ResolveError::TooManyLinks);
                        }
                        cur = std::fs::canonicalize(&next).or_else(|e| {
                            if e.kind() == ErrorKind::NotFound {
                                // A dangling link: a write through it creates its target.
                                dangling_target(&next, &cur, links)
                            } else {
                                Err(ResolveError::Io {
                                    path: next.clone(),
                                    source: e,
                                })
                            }
                        })?;
                    }
                    Ok(_) => cur = next,
                    Err(e) if e.kind() == ErrorKind::NotFound => tail.push(name),
                    Err(e) if e.raw_os_error() == Some(enotdir()) => tail.push(name),
                    Err(source) => return Err(ResolveError::Io { path: next, source }),
                }
            }
        }
    }
    for t in tail {
        cur.push(t);
    }
    Ok(cur)
}

/// Where a dangling symlink points, resolved in turn (the link's directory is `dir`), on the
/// caller's link budget.
fn dangling_target(link: &Path, dir: &Path, links: &mut usize) -> Result<PathBuf, ResolveError> {
    if *links > MAX_LINKS {
        return Err(ResolveError::TooManyLinks);
    }
    let target = std::fs::read_link(link).map_err(|source| ResolveError::Io {
        path: link.to_owned(),
        source,
    })?;
    walk(dir, &target, links)
}

#[cfg(unix)]
fn enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

#[cfg(not(unix))]
fn enotdir() -> i32 {
    -1
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!("thoth-paths-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(root.join("public/sub")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("notes.txt"), "secret").unwrap();
        std::fs::write(root.join("public/a.txt"), "ok").unwrap();
        symlink("../notes.txt", root.join("public/link.txt")).unwrap();
        symlink("../private", root.join("public/dir")).unwrap();
        symlink("../private/new.txt", root.join("public/dangling.txt")).unwrap();
        std::fs::canonicalize(root).unwrap()
    }

    fn one(r: Result<Vec<String>, ResolveError>) -> Vec<String> {
        r.unwrap()
    }

    #[test]
    fn symlinks_are_followed_and_missing_tails_stay_lexical() {
        let root = tree();
        let r = |p: &str| one(FsResolver.resolve(&format!("{}/{p}", root.display())));
        let at = |p: &str| format!("{}/{p}", root.display());
        assert_eq!(r("public/a.txt"), [at("public/a.txt")]);
        assert_eq!(r("public/link.txt"), [at("notes.txt")]);
        assert_eq!(r("public/dir/new.txt"), [at("private/new.txt")]);
        assert_eq!(r("public/dangling.txt"), [at("private/new.txt")]);
        assert_eq!(
            r("public/sub/missing/x.txt"),
            [at("public/sub/missing/x.txt")]
        );
        // `dir/..` is the parent of the link's target to the kernel, `public` to Node: both.
        assert_eq!(r("public/dir/../a.txt"), [at("a.txt"), at("public/a.txt")]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_symlink_loop_cannot_be_resolved() {
        let root = tree();
        symlink("loop", root.join("loop")).unwrap();
        assert!(
            FsResolver
                .resolve(&format!("{}/loop/x", root.display()))
                .is_err()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_dangling_link_back_to_itself_is_refused_not_a_stack_overflow() {
        // `a -> x/../a` with `x` missing: the kernel says ENOENT, the lexical walk of the target
        // pops `x` and reaches `a` again. Each round spends the one budget.
        let root = tree();
        symlink("x/../a", root.join("a")).unwrap();
        for p in ["a", "a/b", "public/../a"] {
            let r = FsResolver.resolve(&format!("{}/{p}", root.display()));
            assert!(
                r.as_ref()
                    .is_err_and(|e| e.to_string().contains("too many symbolic links")),
                "{p}: {r:?}"
            );
        }
        // Two links taking turns.
        symlink("y/../c", root.join("b")).unwrap();
        symlink("z/../b", root.join("c")).unwrap();
        assert!(
            FsResolver
                .resolve(&format!("{}/b", root.display()))
                .is_err()
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
