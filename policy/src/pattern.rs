//! Patterns that appear in policy documents, compiled while the document is parsed so that a bad
//! pattern is reported with the line it stands on.

use std::fmt;
use std::sync::OnceLock;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a glob or regex of a policy document is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatternError {
    /// An empty glob.
    #[error("empty pattern: use \"*\" to match everything")]
    Empty,
    /// A glob that does not parse.
    #[error("invalid glob {src:?}: {kind}")]
    Glob {
        /// The glob as written.
        src: String,
        /// What is wrong with it.
        kind: globset::ErrorKind,
    },
    /// A regular expression that does not compile.
    #[error("invalid regex {src:?}: {}", regex_reason(.source))]
    Regex {
        /// The expression as written.
        src: String,
        /// The compiler's error.
        source: regex::Error,
    },
}

/// regex's own message draws a caret diagram over several lines; its last line says what is
/// wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let what = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    what.trim_start_matches("error: ").to_owned()
}

fn parse_glob(src: &str, literal_separator: bool) -> Result<Glob, PatternError> {
    if src.is_empty() {
        return Err(PatternError::Empty);
    }
    GlobBuilder::new(src)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map_err(|e| PatternError::Glob {
            src: src.to_owned(),
            kind: e.kind().clone(),
        })
}

/// A parsed glob. Patterns without wildcards compare as plain strings; the others compile their
/// matcher on first use, so a large document costs little to load and only the entries a session
/// actually uses are ever compiled.
#[derive(Clone)]
struct Compiled {
    glob: Glob,
    literal: bool,
    /// `name*` where `*` may match anything (no separator rule) and `name` holds no wildcard:
    /// matched as a prefix, without the regex.
    prefix: bool,
    matcher: OnceLock<GlobMatcher>,
}

const GLOB_META: [char; 7] = ['*', '?', '[', ']', '{', '}', '\\'];

impl Compiled {
    fn new(src: &str, literal_separator: bool) -> Result<Self, PatternError> {
        let glob = parse_glob(src, literal_separator)?;
        let literal = !src.contains(GLOB_META);
        let prefix = !literal_separator
            && src
                .strip_suffix('*')
                .is_some_and(|head| !head.contains(GLOB_META));
        Ok(Self {
            glob,
            literal,
            prefix,
            matcher: OnceLock::new(),
        })
    }

    fn is_match(&self, src: &str, candidate: &str) -> bool {
        if self.literal {
            return src == candidate;
        }
        if self.prefix {
            return candidate.starts_with(&src[..src.len() - 1]);
        }
        self.matcher
            .get_or_init(|| self.glob.compile_matcher())
            .is_match(candidate)
    }
}

macro_rules! glob_type {
    ($(#[$doc:meta])* $name:ident, $literal_separator:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            src: String,
            compiled: Compiled,
        }

        impl $name {
            /// Parses `src`, or says why it is not a valid pattern.
            pub fn new(src: &str) -> Result<Self, PatternError> {
                Ok(Self { src: src.to_owned(), compiled: Compiled::new(src, $literal_separator)? })
            }

            /// The pattern as the admin wrote it.
            pub fn as_str(&self) -> &str {
                &self.src
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.src)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.src)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let src = String::deserialize(d)?;
                Self::new(&src).map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.src)
            }
        }
    };
}

glob_type!(
    /// A glob over names (tools, servers, command-line tokens): `*` matches any run of characters,
    /// `?` one character, `[abc]` a class, `{a,b}` alternatives.
    ToolGlob,
    false
);

glob_type!(
    /// A glob over paths: `*` stays within one path component, `**` crosses components.
    PathGlob,
    true
);

impl ToolGlob {
    /// Whether `name` matches.
    pub fn is_match(&self, name: &str) -> bool {
        self.compiled.is_match(&self.src, name)
    }
}

impl PathGlob {
    /// Whether `path` matches after lexical normalization (`.` and `..` resolved, repeated
    /// separators folded). A path whose `..` would climb above its root never matches.
    pub fn is_match(&self, path: &str) -> bool {
        if is_normal(path) {
            return self.compiled.is_match(&self.src, path);
        }
        match normalize_path(path) {
            Some(p) => self.compiled.is_match(&self.src, p.as_str()),
            None => false,
        }
    }
}

impl PathGlob {
    /// The leading directory of the pattern that holds no wildcard (`/srv/data` of
    /// `/srv/data/**/*.txt`), lexically normalized; `None` when there is none (`/`, `*`, `./*`).
    /// The last component is never part of it, so a literal pattern yields its directory.
    pub fn literal_prefix(&self) -> Option<&str> {
        let src = self.src.as_str();
        if cfg!(windows) && src.contains('\\') {
            return None;
        }
        let wild = src
            .find(['*', '?', '[', ']', '{', '}', '\\'])
            .unwrap_or(src.len());
        let dir = &src[..src[..wild].rfind('/')?];
        let keep = dir.trim_end_matches('/');
        (!keep.is_empty() && keep != "." && is_normal(keep)).then_some(keep)
    }
}

/// Whether `path` is already what [`normalize_path`] would return (the common case, checked
/// without allocating).
fn is_normal(path: &str) -> bool {
    if cfg!(windows) && path.contains('\\') {
        return false;
    }
    !path.contains('\0')
        && !path.ends_with('/')
        && !path.contains("//")
        && path
            .split('/')
            .skip(1)
            .all(|part| part != "." && part != "..")
        && !matches!(path.split('/').next(), Some(".") | Some(".."))
}

/// Lexically normalizes a path. Returns `None` for a path that climbs above its start with `..`
/// or that contains a NUL byte, so that such a path can never satisfy an allow-list.
pub(crate) fn normalize_path(path: &str) -> Option<String> {
    if path.contains('\0') {
        return None;
    }
    let owned;
    let path = if cfg!(windows) {
        owned = path.replace('\\', "/");
        owned.as_str()
    } else {
        path
    };
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    Some(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// A regular expression that must match an argument value in full (it is anchored at both ends).
#[derive(Clone)]
pub struct Pattern {
    src: String,
    re: regex::Regex,
}

impl Pattern {
    /// Compiles `src` anchored at both ends, or says why it is not a valid expression.
    pub fn new(src: &str) -> Result<Self, PatternError> {
        let re = regex::RegexBuilder::new(&format!("^(?:{src})$"))
            .size_limit(1 << 20)
            .build()
            .map_err(|source| PatternError::Regex {
                src: src.to_owned(),
                source,
            })?;
        Ok(Self {
            src: src.to_owned(),
            re,
        })
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.re.is_match(value)
    }

    /// The expression as the admin wrote it.
    pub fn as_str(&self) -> &str {
        &self.src
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.src)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let src = String::deserialize(d)?;
        Self::new(&src).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_globs_match_as_their_regex_does() {
        for src in ["read_*", "*", "a*", "x.y*", "tool_1*"] {
            let g = ToolGlob::new(src).unwrap();
            assert!(g.compiled.prefix, "{src}");
            let regex = g.compiled.glob.compile_matcher();
            for name in [
                "read_",
                "read_x",
                "read",
                "a",
                "",
                "x.y/z",
                "xay",
                "tool_1\n2",
                "tool_12",
                "aé",
            ] {
                assert_eq!(g.is_match(name), regex.is_match(name), "{src} vs {name:?}");
            }
        }
        for src in ["a*b", "a?*", "[a]*", "a\\*", "{a,b}*"] {
            assert!(!ToolGlob::new(src).unwrap().compiled.prefix, "{src}");
        }
        assert!(!PathGlob::new("/srv/*").unwrap().compiled.prefix);
    }

    #[test]
    fn tool_glob_matches_names() {
        let g = ToolGlob::new("read_*").unwrap();
        assert!(g.is_match("read_text_file"));
        assert!(!g.is_match("write_file"));
        assert!(
            ToolGlob::new("{fetch_url,screenshot}")
                .unwrap()
                .is_match("screenshot")
        );
        assert!(ToolGlob::new("").is_err());
        assert!(ToolGlob::new("[").is_err());
        // Literal patterns compare exactly, escapes included.
        assert!(ToolGlob::new("read_file").unwrap().is_match("read_file"));
        assert!(!ToolGlob::new("read_file").unwrap().is_match("read_files"));
        assert!(ToolGlob::new("a\\*").unwrap().is_match("a*"));
        assert!(!ToolGlob::new("a\\*").unwrap().is_match("ab"));
    }

    #[test]
    fn path_glob_normalizes_and_refuses_escapes() {
        let g = PathGlob::new("/srv/data/**").unwrap();
        assert!(g.is_match("/srv/data/a/b.txt"));
        assert!(g.is_match("/srv//data/./a.txt"));
        assert!(!g.is_match("/srv/data/../secret.txt"));
        assert!(!g.is_match("/srv/data/../../etc/passwd"));
        assert!(!g.is_match("/etc/passwd"));
        assert!(!g.is_match("srv/data/x"));
        let one = PathGlob::new("/srv/*.txt").unwrap();
        assert!(one.is_match("/srv/a.txt"));
        assert!(!one.is_match("/srv/sub/a.txt"));
        assert_eq!(normalize_path("/a/../../b"), None);
        assert_eq!(g.literal_prefix(), Some("/srv/data"));
        assert_eq!(one.literal_prefix(), Some("/srv"));
        assert_eq!(
            PathGlob::new("/a/b.txt").unwrap().literal_prefix(),
            Some("/a")
        );
        assert_eq!(PathGlob::new("/*").unwrap().literal_prefix(), None);
        assert_eq!(
            PathGlob::new("public/**").unwrap().literal_prefix(),
            Some("public")
        );
        assert_eq!(normalize_path("a/./b/"), Some("a/b".into()));
        assert_eq!(normalize_path("/x\0y"), None);
        // The allocation-free check agrees with normalization.
        for p in [
            "/a/b", "/a//b", "/a/./b", "/a/../b", "a/b", "./a", "../a", "/", "/a/", "", "a/..",
            "/x\0",
        ] {
            if is_normal(p) {
                assert_eq!(normalize_path(p).as_deref(), Some(p), "{p:?}");
            }
        }
    }

    #[test]
    fn regex_is_anchored() {
        let p = Pattern::new("https://[a-z.]+/.*").unwrap();
        assert!(p.is_match("https://example.com/x"));
        assert!(!p.is_match("javascript:alert(1)//https://a.b/"));
        assert!(Pattern::new("(").is_err());
    }
}
