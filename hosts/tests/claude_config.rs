//! The Claude Desktop config rewrite against a corpus of realistic files and generated ones:
//! wrap → unwrap gives the original back, wrapping twice is wrapping once, and files that do not
//! parse (or have the wrong shape) are never touched.

mod common;

use common::{Rng, THOTH, corpus, name_of, refused_untouched, round_trip};
use serde_json::{Value, json};
use thoth_hosts::clients::claude_desktop::ClaudeDesktop;
use thoth_hosts::file;
use thoth_hosts::format::Op;

/// The Claude Desktop rewrite, on text.
mod rewrite {
    use thoth_hosts::clients::claude_desktop::ClaudeDesktop;
    use thoth_hosts::format::{self, ConfigError, Op, Rewritten};
    use thoth_hosts::host::Host;

    pub(super) fn run(text: &str, op: &Op) -> Result<Rewritten, ConfigError> {
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

const CORPUS: &str = "claude-desktop";

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
    let had_wrapper = has_wrapped(&original);
    let rt = round_trip(name, text, had_wrapper, &Op::wrap(THOTH), |t, op| {
        rewrite::run(t, op).unwrap_or_else(|e| panic!("{name}: {e}"))
    });
    let w = &rt.wrapped;
    let wv = value(&w.text);
    // Every stdio entry now runs through thoth; remote ones are untouched.
    if let Some(servers) = wv["mcpServers"].as_object() {
        for (k, e) in servers {
            let skipped = w.report.skipped.iter().any(|(n, _)| n == k);
            if e.get("command").is_some() && !skipped {
                assert!(is_wrapped(e), "{name}: {k} is not wrapped: {e}");
                let args: Vec<String> =
                    serde_json::from_value(e["args"].clone()).unwrap_or_default();
                common::runs_thoth_for(
                    &format!("{name}: {k}"),
                    e["command"].as_str(),
                    &args,
                    k,
                    (!is_wrapped(&original["mcpServers"][k])).then_some("claude-desktop"),
                );
            } else {
                assert_eq!(e, &original["mcpServers"][k], "{name}: {k} changed");
            }
        }
    }
    // Unwrap gives the original value back (for files that had no wrapper to begin with, the
    // exact bytes, checked by the round trip).
    if had_wrapper {
        let direct = rewrite::unwrap(text).unwrap();
        assert_eq!(value(&rt.unwrapped.text), value(&direct.text), "{name}");
    } else {
        assert_eq!(
            value(&rt.unwrapped.text),
            original,
            "{name}: unwrap did not restore the value"
        );
    }
}

#[test]
fn every_valid_corpus_file_round_trips() {
    let mut n = 0;
    for path in corpus(CORPUS, 20) {
        let name = name_of(&path);
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
    let read = |n: &str| common::read_corpus(CORPUS, n);
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
    for path in corpus(CORPUS, 20) {
        let name = name_of(&path);
        if name.starts_with("valid-") {
            continue;
        }
        let copy = tmp.path().join(&name);
        std::fs::copy(&path, &copy).unwrap();
        let ops = [Op::wrap(THOTH), Op::Unwrap];
        for r in refused_untouched(
            &ClaudeDesktop,
            &copy,
            &name,
            name.starts_with("shape-"),
            &ops,
        ) {
            if let common::Refusal::At { line, column } = r {
                assert!(line >= 1 && column <= 200, "{name}: {line}:{column}");
            }
        }
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

/// Claude Desktop's random values.
trait Values {
    fn string(&mut self) -> String;
    fn scalar(&mut self) -> Value;
    fn any(&mut self, depth: u32) -> Value;
}

impl Values for Rng {
    fn string(&mut self) -> String {
        const PARTS: [&str; 16] = [
            "a", "Z", "0", "-", "_", " ", "/", "\\", "\"", "é", "Ж", "项", "🚀", "\t", "\u{1}", "~",
        ];
        self.string_of(&PARTS, 12)
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
                r.shuffle(&mut keys);
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
    common::render_json(r, &Value::Object(top))
}

#[test]
fn generated_configs_obey_the_round_trip_laws() {
    let (mut r, seed) = Rng::seeded();
    for case in 0..1500 {
        let text = random_config(&mut r);
        let name = format!("generated case {case} (THOTH_TEST_SEED={seed})");
        check_laws(&name, &text);
    }
}
