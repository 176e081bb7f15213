//! What the integration tests of thoth-hosts share: the corpus, writing a file, the seeded
//! generator (replayed with `THOTH_TEST_SEED=<seed>`), and the laws that hold whatever the
//! format (wrapping twice is wrapping once, unwrapping gives the bytes back, a wrapped entry
//! runs `thoth run --server NAME --client HOST …`, a file that does not parse is refused with
//! its position and left byte for byte).

// Each file of `tests/` is a crate of its own that takes only what it needs from here: what one
// of them leaves unused is not dead code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::{ConfigError, Op, Rewritten};
use thoth_hosts::host::Host;

pub(crate) const THOTH: &str = "/usr/local/bin/thoth";

/// `tests/corpus/<dir>`.
pub(crate) fn corpus_dir(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir)
}

/// The files of `tests/corpus/<dir>`, sorted; at least `at_least` of them.
pub(crate) fn corpus(dir: &str, at_least: usize) -> Vec<PathBuf> {
    let d = corpus_dir(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= at_least, "{dir}: the corpus is missing");
    files
}

/// The files of `tests/corpus/<dir>` whose name starts with `prefix`, with their names, sorted.
pub(crate) fn corpus_named(dir: &str, prefix: &str) -> Vec<(String, PathBuf)> {
    corpus(dir, 0)
        .into_iter()
        .map(|p| (name_of(&p), p))
        .filter(|(n, _)| n.starts_with(prefix))
        .collect()
}

/// The text of `tests/corpus/<dir>/<name>`.
pub(crate) fn read_corpus(dir: &str, name: &str) -> String {
    read(&corpus_dir(dir).join(name))
}

pub(crate) fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `text` at `path`, making its directories.
pub(crate) fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The seed of a generated test: `THOTH_TEST_SEED` replays a failure, else the clock.
pub(crate) fn seed() -> u64 {
    std::env::var("THOTH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1
}

/// xorshift64*: reproducible random configs.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// Seeded by [`seed`].
    pub(crate) fn seeded() -> (Rng, u64) {
        let s = seed();
        (Rng(s), s)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    pub(crate) fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
    /// Up to `max - 1` of `parts`, joined.
    pub(crate) fn string_of(&mut self, parts: &[&str], max: u64) -> String {
        (0..self.below(max)).map(|_| self.pick(parts)).collect()
    }
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Line endings as editors write them (CRLF one time in three, the same throughout the file),
/// and a BOM one time in five.
pub(crate) fn endings_and_bom(r: &mut Rng, mut text: String) -> String {
    if r.chance(3) {
        text = text.replace('\n', "\r\n");
    }
    if r.chance(5) {
        text.insert(0, '\u{feff}');
    }
    text
}

/// `v` as serde_json writes it: compact, pretty, or pretty with tabs or four spaces; a final
/// newline one time in two; then [`endings_and_bom`].
pub(crate) fn render_json(r: &mut Rng, v: &serde_json::Value) -> String {
    let mut text = match r.below(4) {
        0 => serde_json::to_string(v).unwrap(),
        1 => serde_json::to_string_pretty(v).unwrap(),
        _ => {
            let indent: &[u8] = if r.chance(2) { b"\t" } else { b"    " };
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(v, &mut ser).unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    if r.chance(2) {
        text.push('\n');
    }
    endings_and_bom(r, text)
}

/// Whether `text` has a line feed that is not part of a CRLF.
pub(crate) fn bare_lf(text: &str) -> bool {
    text.replace("\r\n", "").contains('\n')
}

/// A rewrite keeps a file's line endings and its BOM.
pub(crate) fn line_endings_kept(name: &str, before: &str, after: &str) {
    if !bare_lf(before) {
        assert!(
            !bare_lf(after),
            "{name}: a bare LF appeared in a file without one\n{after:?}"
        );
    }
    if !before.contains('\r') {
        assert!(!after.contains('\r'), "{name}: a CR appeared in an LF file");
    }
    assert_eq!(
        before.starts_with('\u{feff}'),
        after.starts_with('\u{feff}'),
        "{name}: the BOM"
    );
}

/// `text` wrapped, wrapped again and unwrapped by [`round_trip`].
pub(crate) struct RoundTrip {
    pub(crate) wrapped: Rewritten,
    pub(crate) again: Rewritten,
    pub(crate) unwrapped: Rewritten,
}

/// The laws every format obeys, for one text that parses (`run` rewrites a text in the file's
/// format): the line endings and BOM are kept, wrapping the wrapped text again with the same
/// `wrap` (the agent's strict wrap included) changes nothing and reports nothing changed, and
/// unwrapping gives back the very bytes of a text that had no wrapper (`had_wrapper`).
pub(crate) fn round_trip(
    name: &str,
    text: &str,
    had_wrapper: bool,
    wrap: &Op,
    run: impl Fn(&str, &Op) -> Rewritten,
) -> RoundTrip {
    let wrapped = run(text, wrap);
    line_endings_kept(name, text, &wrapped.text);
    let again = run(&wrapped.text, wrap);
    assert_eq!(
        again.text, wrapped.text,
        "{name}: wrapping twice changed the file"
    );
    assert!(!again.report.changed(), "{name}: {:?}", again.report);
    let unwrapped = run(&wrapped.text, &Op::Unwrap);
    if !had_wrapper {
        assert_eq!(
            unwrapped.text, text,
            "{name}: unwrap did not restore the bytes\nwrapped:\n{}",
            wrapped.text
        );
    }
    RoundTrip {
        wrapped,
        again,
        unwrapped,
    }
}

/// A wrapped entry `server` runs this thoth with the canonical head for `client`:
/// `thoth run --server SERVER --client CLIENT …` (with no `client`, a wrapper a plain wrap left
/// as it was: `thoth run --server SERVER …`).
pub(crate) fn runs_thoth_for(
    label: &str,
    command: Option<&str>,
    args: &[String],
    server: &str,
    client: Option<&str>,
) {
    assert_eq!(command, Some(THOTH), "{label}: the command is thoth");
    let mut head = vec!["run", "--server", server];
    head.extend(client.map(|c| ["--client", c]).into_iter().flatten());
    assert_eq!(
        args.get(..head.len()),
        Some(&head.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
        "{label}: the head"
    );
}

/// How a rewrite refused a file.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Parsed, but not the shape the host's format has; why.
    Shape(String),
    /// Did not parse: where.
    At {
        line: usize,
        column: usize,
    },
    NotUtf8,
}

/// Each of `ops` refuses the file at `path` (a `shape-` file, `shape`, for its shape; any
/// other for not parsing, or not being UTF-8), names the file in its error, and leaves it byte
/// for byte with no backup beside it. Returns each refusal, for the format's own bounds.
pub(crate) fn refused_untouched(
    host: &dyn Host,
    path: &Path,
    label: &str,
    shape: bool,
    ops: &[Op],
) -> Vec<Refusal> {
    let before = std::fs::read(path).unwrap();
    let file = name_of(path);
    let mut out = Vec::new();
    for op in ops {
        let err = file::rewrite_file(host, path, op, false).unwrap_err();
        let refusal = match (&err, shape) {
            (
                FileError::Config {
                    source: ConfigError::Shape(why),
                    ..
                },
                true,
            ) => Refusal::Shape(why.clone()),
            (
                FileError::Config {
                    source: ConfigError::Invalid { line, column, .. },
                    ..
                },
                false,
            ) => {
                assert!(err.to_string().contains("line"), "{label}: {err}");
                Refusal::At {
                    line: *line,
                    column: *column,
                }
            }
            (FileError::NotUtf8 { .. }, false) => Refusal::NotUtf8,
            _ => panic!("{label}: unexpected {err}"),
        };
        assert!(
            err.to_string().contains(&file),
            "{label}: the error names the file: {err}"
        );
        assert_eq!(std::fs::read(path).unwrap(), before, "{label} was modified");
        let mut backup = path.to_owned().into_os_string();
        backup.push(file::BACKUP_SUFFIX);
        assert!(!Path::new(&backup).exists(), "{label}: a backup was made");
        out.push(refusal);
    }
    out
}

/// The lines of `bytes`, as a parser counts them (at least one).
pub(crate) fn lines(bytes: &[u8]) -> usize {
    bytes.split(|b| *b == b'\n').count()
}
