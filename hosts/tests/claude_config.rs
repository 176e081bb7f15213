//! The Claude Desktop config rewrite against a corpus of realistic files and generated ones:
//! wrap → unwrap gives the original back, wrapping twice is wrapping once, and files that do not
//! parse (or have the wrong shape) are never touched.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use thoth_hosts::clients::claude_desktop::ClaudeDesktop;
use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::{ConfigError, Op};

/// The Claude Desktop rewrite, on text.
mod rewrite {
    use thoth_hosts::clients::claude_desktop::ClaudeDesktop;
    use thoth_hosts::format::{self, ConfigError, Op, Rewritten};
    use thoth_hosts::host::Host;

    fn run(text: &str, op: &Op) -> Result<Rewritten, ConfigError> {
        let path = std::path::Path::new("claude_desktop_config.json");
        format::rewrite(
            text,
            &ClaudeDesktop.format(path),
            op,
            &ClaudeDesktop.ctx(path),
        )
    }

    pub(super) fn wrap(text: &str, thoth: &str) -> Result<Rewritten, ConfigError> {
        run(text, &Op::wrap(thoth))
    }

    pub(super) fn unwrap(text: &str) -> Result<Rewritten, ConfigError> {
        run(text, &Op::Unwrap)
    }
}

fn is_wrapped(v: &Value) -> bool {
    thoth_hosts::wrapper::Entry::from_json(v).is_wrapped()
}

const THOTH: &str = "/usr/local/bin/thoth";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/claude-desktop");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus is missing");
    files
}

fn value(text: &str) -> Value {
    serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap()
}

fn has_wrapped(v: &Value) -> bool {
    v["mcpServers"]
        .as_object()
        .is_some_and(|m| m.values().any(is_wrapped))
}

/// The laws, for one text that parses.
fn check_laws(name: &str, text: &str) {
    let original = value(text);
    let w = rewrite::wrap(text, THOTH).unwrap_or_else(|e| panic!("{name}: {e}"));
    let wv = value(&w.text);
    // Every stdio entry now runs through thoth; remote ones are untouched.
    if let Some(servers) = wv["mcpServers"].as_object() {
        for (k, e) in servers {
            let skipped = w.report.skipped.iter().any(|(n, _)| n == k);
            if e.get("command").is_some() && !skipped {
                assert!(is_wrapped(e), "{name}: {k} is not wrapped: {e}");
                assert_eq!(e["command"], THOTH, "{name}: {k}");
                assert_eq!(e["args"][2], json!(k), "{name}: --server names the entry");
            } else {
                assert_eq!(e, &original["mcpServers"][k], "{name}: {k} changed");
            }
        }
    }
    // Wrap twice = wrap once.
    let again = rewrite::wrap(&w.text, THOTH).unwrap();
    assert_eq!(
        again.text, w.text,
        "{name}: wrapping twice changed the file"
    );
    // Unwrap gives the original value back (for files that had no wrapper to begin with, the
    // exact bytes).
    let u = rewrite::unwrap(&w.text).unwrap();
    if has_wrapped(&original) {
        let direct = rewrite::unwrap(text).unwrap();
        assert_eq!(value(&u.text), value(&direct.text), "{name}");
    } else {
        assert_eq!(
            value(&u.text),
            original,
            "{name}: unwrap did not restore the value"
        );
        assert_eq!(u.text, text, "{name}: unwrap did not restore the bytes");
    }
}

#[test]
fn every_valid_corpus_file_round_trips() {
    let mut n = 0;
    for path in corpus() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("valid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        check_laws(&name, &text);
        n += 1;
    }
    assert!(n >= 15, "{n} valid corpus files");
}

#[test]
fn specific_files_keep_what_people_care_about() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/claude-desktop");
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    // CRLF stays CRLF, the BOM stays, tabs stay.
    let w = rewrite::wrap(&read("valid-crlf.json"), THOTH).unwrap();
    assert!(
        !w.text.replace("\r\n", "").contains('\n'),
        "a bare LF appeared"
    );
    assert!(
        rewrite::wrap(&read("valid-bom.json"), THOTH)
            .unwrap()
            .text
            .starts_with('\u{feff}')
    );
    assert!(
        rewrite::wrap(&read("valid-tabs.json"), THOTH)
            .unwrap()
            .text
            .contains("\n\t\t\t\"command\"")
    );
    // env with secrets is kept verbatim; Unicode is not escaped.
    let w = rewrite::wrap(&read("valid-env-secrets.json"), THOTH).unwrap();
    assert!(
        w.text
            .contains("\"PGPASSWORD\": \"correct horse battery staple\"")
    );
    let w = rewrite::wrap(&read("valid-unicode.json"), THOTH).unwrap();
    assert!(w.text.contains("/Users/zoë/Документы/项目"), "{}", w.text);
    assert!(
        w.text.contains("\"--server\", \"données-équipe\""),
        "{}",
        w.text
    );
    // Windows paths survive as values.
    let w = rewrite::wrap(&read("valid-windows-paths.json"), THOTH).unwrap();
    assert_eq!(
        value(&w.text)["mcpServers"]["filesystem"]["args"][6],
        "C:\\Program Files\\nodejs\\npx.cmd"
    );
    // Already wrapped: left alone; old thoth path: updated; plain: wrapped; remote: reported.
    let w = rewrite::wrap(&read("valid-already-wrapped.json"), THOTH).unwrap();
    assert_eq!(w.report.already, vec!["files"]);
    assert_eq!(w.report.updated, vec!["old-path"]);
    assert_eq!(w.report.wrapped, vec!["plain"]);
    let w = rewrite::wrap(&read("valid-remote-url-entry.json"), THOTH).unwrap();
    assert_eq!(w.report.remote, vec!["linear"]);
    // A hundred servers: all wrapped.
    let w = rewrite::wrap(&read("valid-hundred-servers.json"), THOTH).unwrap();
    assert_eq!(w.report.wrapped.len(), 100);
}

#[test]
fn invalid_files_are_refused_with_a_position_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for path in corpus() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("valid-") {
            continue;
        }
        let copy = tmp.path().join(&name);
        std::fs::copy(&path, &copy).unwrap();
        let before = std::fs::read(&copy).unwrap();
        let err = file::rewrite_file(&ClaudeDesktop, &copy, &Op::wrap(THOTH), false).unwrap_err();
        match (&err, name.starts_with("shape-")) {
            (
                FileError::Config {
                    source: ConfigError::Shape(_),
                    ..
                },
                true,
            ) => {}
            (
                FileError::Config {
                    source: ConfigError::Invalid { line, column, .. },
                    ..
                },
                false,
            ) => {
                assert!(*line >= 1 && *column <= 200, "{name}: {err}");
            }
            (FileError::NotUtf8 { .. }, false) => {}
            _ => panic!("{name}: unexpected {err}"),
        }
        assert!(
            err.to_string().contains(&name),
            "{name}: the error names the file: {err}"
        );
        assert_eq!(std::fs::read(&copy).unwrap(), before, "{name} was modified");
        let mut backup = copy.clone().into_os_string();
        backup.push(file::BACKUP_SUFFIX);
        assert!(!Path::new(&backup).exists(), "{name}: a backup was made");
        assert!(file::rewrite_file(&ClaudeDesktop, &copy, &Op::Unwrap, false).is_err());
        assert_eq!(std::fs::read(&copy).unwrap(), before);
    }
}

#[test]
fn a_file_rewrite_is_atomic_keeps_its_mode_and_makes_one_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("claude_desktop_config.json");
    let original = "{\n  \"mcpServers\": {\"a\": {\"command\": \"npx\", \"args\": [\"x\"]}}\n}\n";
    std::fs::write(&path, original).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = file::rewrite_file(&ClaudeDesktop, &path, &Op::wrap(THOTH), false).unwrap();
    assert!(out.written);
    let backup = tmp.path().join("claude_desktop_config.json.thoth-backup");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.uid(), std::fs::metadata(tmp.path()).unwrap().uid());
        assert_eq!(
            std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Unwrap, then wrap again: the backup is still the very first original.
    file::rewrite_file(&ClaudeDesktop, &path, &Op::Unwrap, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    std::fs::write(&path, original.replace("npx", "node")).unwrap();
    file::rewrite_file(&ClaudeDesktop, &path, &Op::wrap(THOTH), false).unwrap();
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
    // Dry run writes nothing.
    file::rewrite_file(&ClaudeDesktop, &path, &Op::Unwrap, true).unwrap();
    assert!(
        rewrite::unwrap(&std::fs::read_to_string(&path).unwrap())
            .unwrap()
            .report
            .changed()
    );
    // No temp files are left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// xorshift64*: reproducible random configs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
    fn string(&mut self) -> String {
        const PARTS: [&str; 16] = [
            "a", "Z", "0", "-", "_", " ", "/", "\\", "\"", "é", "Ж", "项", "🚀", "\t", "\u{1}", "~",
        ];
        (0..self.below(12)).map(|_| self.pick(&PARTS)).collect()
    }
    fn scalar(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.below(1_000_000) as i64 - 500_000),
            3 => json!((self.below(10_000) as f64) / 7.0),
            _ => json!(self.string()),
        }
    }
    fn any(&mut self, depth: u32) -> Value {
        if depth == 0 {
            return self.scalar();
        }
        match self.below(4) {
            0 => Value::Array((0..self.below(4)).map(|_| self.any(depth - 1)).collect()),
            1 => Value::Object(
                (0..self.below(4))
                    .map(|_| (self.string(), self.any(depth - 1)))
                    .collect(),
            ),
            _ => self.scalar(),
        }
    }
}

fn random_config(r: &mut Rng) -> String {
    let mut servers = serde_json::Map::new();
    for _ in 0..r.below(10) {
        let mut e = serde_json::Map::new();
        match r.below(8) {
            0 => {
                e.insert(
                    "url".into(),
                    json!(format!("https://{}.example", r.below(99))),
                );
            }
            _ => {
                // Keys in a random order, `command` not necessarily first.
                let mut keys = vec!["command", "args", "env", "x"];
                for i in (1..keys.len()).rev() {
                    keys.swap(i, r.below(i as u64 + 1) as usize);
                }
                for k in keys {
                    match k {
                        "command" => {
                            e.insert("command".into(), json!(format!("cmd{}", r.string())));
                        }
                        "args" if r.below(3) > 0 => {
                            let args: Vec<String> = (0..r.below(5)).map(|_| r.string()).collect();
                            e.insert("args".into(), json!(args));
                        }
                        "env" if r.below(2) == 0 => {
                            e.insert(
                                "env".into(),
                                json!({"TOKEN": r.string(), "PATH": r.string()}),
                            );
                        }
                        "x" if r.below(3) == 0 => {
                            e.insert(r.string(), r.any(3));
                        }
                        _ => {}
                    }
                }
            }
        }
        servers.insert(
            format!("s{}{}", r.below(1000), r.string()),
            Value::Object(e),
        );
    }
    let mut top = serde_json::Map::new();
    if r.below(2) == 0 {
        top.insert("globalShortcut".into(), json!(r.string()));
    }
    top.insert("mcpServers".into(), Value::Object(servers));
    for _ in 0..r.below(3) {
        top.insert(r.string(), r.any(4));
    }
    let v = Value::Object(top);
    let mut text = match r.below(4) {
        0 => serde_json::to_string(&v).unwrap(),
        1 => serde_json::to_string_pretty(&v).unwrap(),
        _ => {
            let indent: &[u8] = if r.below(2) == 0 { b"\t" } else { b"    " };
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&v, &mut ser).unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    if r.below(2) == 0 {
        text.push('\n');
    }
    // Line endings are consistent within a file, as editors write them.
    if r.below(3) == 0 {
        text = text.replace('\n', "\r\n");
    }
    if r.below(5) == 0 {
        text.insert(0, '\u{feff}');
    }
    text
}

#[test]
fn generated_configs_obey_the_round_trip_laws() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut r = Rng(seed);
    for case in 0..1500 {
        let text = random_config(&mut r);
        let name = format!("generated case {case} (seed {seed})");
        check_laws(&name, &text);
    }
}
