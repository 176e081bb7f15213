//! The JSON hosts (Claude Code, Cursor, VS Code, Windsurf, and Claude Desktop again) through
//! the one rewrite, with each host's own format and context: a corpus of realistic files per
//! host and generated JSON/JSONC configs obey the laws (every stdio entry of every server table
//! wrapped with `--client <host>`; remote entries untouched and reported; nothing but `command`
//! and `args` changes; wrapping twice is wrapping once; unwrapping restores the bytes; the
//! agent's strict wrap of a wrapped file changes nothing), files that do not parse are refused
//! with a position and left byte for byte, and each host finds its files in a home laid out
//! for each OS.

use std::path::{Path, PathBuf};

use serde_json::Value;
use thoth_hosts::clients::{
    claude_code::ClaudeCode, claude_desktop::ClaudeDesktop, cursor::Cursor, vscode::VsCode,
    windsurf::Windsurf,
};
use thoth_hosts::file::{self, FileError};
use thoth_hosts::format::{self, ConfigError, Format, Found, Op, Rewritten};
use thoth_hosts::host::{Host, Os};
use thoth_hosts::wrapper::{self, NotGoverned};

const THOTH: &str = "/usr/local/bin/thoth";

fn extra() -> Vec<String> {
    vec!["--agent-socket".into(), "/run/thoth test/agent.sock".into()]
}

/// A corpus directory and its host.
struct Corpus {
    dir: &'static str,
    host: &'static dyn Host,
}

const CORPORA: [Corpus; 5] = [
    Corpus {
        dir: "claude-desktop",
        host: &ClaudeDesktop,
    },
    Corpus {
        dir: "claude-code",
        host: &ClaudeCode,
    },
    Corpus {
        dir: "cursor",
        host: &Cursor,
    },
    Corpus {
        dir: "vscode",
        host: &VsCode,
    },
    Corpus {
        dir: "windsurf",
        host: &Windsurf,
    },
];

/// The name the host gives the file a corpus file stands for (it picks the format): Claude
/// Code's `*.mcp-json.json` are projects' `.mcp.json`, VS Code's `*settings*` are
/// `settings.json`.
fn logical_name(host: &dyn Host, corpus_name: &str) -> &'static str {
    match host.id() {
        "claude-desktop" => "claude_desktop_config.json",
        "claude-code" if corpus_name.ends_with(".mcp-json.json") => ".mcp.json",
        "claude-code" => ".claude.json",
        "cursor" => "mcp.json",
        "vscode" if corpus_name.contains("settings") => "settings.json",
        "vscode" => "mcp.json",
        "windsurf" => "mcp_config.json",
        other => panic!("no corpus for {other}"),
    }
}

fn corpus(c: &Corpus) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(c.dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: the corpus is missing", c.dir);
    files
}

fn jsonc(fmt: &Format) -> bool {
    match fmt {
        Format::Json(f) => f.jsonc,
        other => panic!("not a JSON format: {other:?}"),
    }
}

fn tables(fmt: &Format) -> &'static [&'static [&'static str]] {
    match fmt {
        Format::Json(f) => f.tables,
        other => panic!("not a JSON format: {other:?}"),
    }
}

fn value(text: &str, fmt: &Format) -> Value {
    format::json::parse(text, jsonc(fmt)).unwrap()
}

/// `v` with `command` and `args` taken out of every entry of every server table (computed
/// here, independently of the engine's own check).
fn mask(v: &Value, fmt: &Format) -> Value {
    fn at(v: &mut Value, path: &[&str]) {
        let Some(obj) = v.as_object_mut() else {
            return;
        };
        match path.split_first() {
            None => {
                for e in obj.values_mut().filter_map(Value::as_object_mut) {
                    e.remove("command");
                    e.remove("args");
                }
            }
            Some((&"*", rest)) => obj.values_mut().for_each(|c| at(c, rest)),
            Some((seg, rest)) => {
                if let Some(c) = obj.get_mut(*seg) {
                    at(c, rest);
                }
            }
        }
    }
    let mut v = v.clone();
    for t in tables(fmt) {
        at(&mut v, t);
    }
    v
}

/// One host file's text and what it stands for.
struct Subject<'a> {
    name: &'a str,
    host: &'a dyn Host,
    path: &'a Path,
    text: &'a str,
}

impl Subject<'_> {
    fn fmt(&self) -> Format {
        self.host.format(self.path)
    }
    fn run(&self, text: &str, op: &Op) -> Rewritten {
        format::rewrite(text, &self.fmt(), op, &self.host.ctx(self.path))
            .unwrap_or_else(|e| panic!("{}: {e}\n{text}", self.name))
    }
    fn entries(&self, text: &str) -> Vec<Found> {
        format::entries(text, &self.fmt()).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

fn line_endings_kept(name: &str, before: &str, after: &str) {
    let bare_lf = |t: &str| t.replace("\r\n", "").contains('\n');
    if before.contains("\r\n") && !bare_lf(before) {
        assert!(!bare_lf(after), "{name}: a bare LF appeared in a CRLF file");
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

/// The laws, for one text that parses. Returns the strict wrap's report.
fn check_laws(s: &Subject<'_>) -> format::Report {
    let name = s.name;
    let fmt = s.fmt();
    let client = s.host.id();
    let ctx = s.host.ctx(s.path);
    let extra = extra();
    let strict = Op::wrap_strict(THOTH, extra.clone());
    let before = s.entries(s.text);
    let w = s.run(s.text, &strict);
    line_endings_kept(name, s.text, &w.text);
    let after = s.entries(&w.text);
    assert_eq!(
        before.len(),
        after.len(),
        "{name}: entries appeared or vanished"
    );
    // Nothing but command and args changed.
    assert_eq!(
        mask(&value(s.text, &fmt), &fmt),
        mask(&value(&w.text, &fmt), &fmt),
        "{name}: more than command and args changed"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(
            (&b.table, &b.scope, &b.name),
            (&a.table, &a.scope, &a.name),
            "{name}"
        );
        let label = b.label();
        let skipped = w.report.skipped.iter().any(|(l, _)| *l == label);
        if b.entry.is_remote() {
            assert_eq!(a, b, "{name}: remote {label} changed");
            assert!(
                w.report.remote.contains(&label),
                "{name}: remote {label} not reported: {:?}",
                w.report
            );
        } else if b.entry.malformed.is_some() || b.entry.command.is_none() || skipped {
            assert!(skipped, "{name}: {label} neither wrapped nor skipped");
            assert_eq!(a, b, "{name}: skipped {label} changed");
        } else {
            let server = ctx.server_name(&b.name);
            match wrapper::governed(&server, client, &a.entry, THOTH, &extra) {
                Ok(()) | Err(NotGoverned::LoaderVariables(_)) => {}
                Err(e) => panic!("{name}: {label} not governed after the wrap: {e}"),
            }
            let args = a.entry.args.clone().unwrap();
            let at = args.iter().position(|x| x == "--client").unwrap();
            assert_eq!(args[at + 1], client, "{name}: {label}");
            // The original command line is what runs after `--`.
            let (cmd, orig, _) = wrapper::original_of(&args).unwrap();
            let (want_cmd, want_args) = if b.entry.is_wrapped() {
                let (c, a, _) =
                    wrapper::original_of(b.entry.args.as_deref().unwrap_or_default()).unwrap();
                (c, a)
            } else {
                (b.entry.command.clone().unwrap(), b.entry.args.clone())
            };
            assert_eq!((cmd, orig), (want_cmd, want_args), "{name}: {label}");
            assert_eq!(
                (&a.entry.env_keys, &a.entry.url, &a.entry.transport),
                (&b.entry.env_keys, &b.entry.url, &b.entry.transport),
                "{name}: {label}"
            );
        }
    }
    // Wrap twice = wrap once; the agent's strict wrap of its own result changes nothing, and
    // neither does a plain `wrap-config` with the same thoth.
    let again = s.run(&w.text, &strict);
    assert_eq!(
        again.text, w.text,
        "{name}: the second strict wrap changed the file"
    );
    assert!(!again.report.changed(), "{name}: {:?}", again.report);
    // The report of a rewrite with nothing to do (made from the value alone) tells the same.
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let mut governed = [&w.report.wrapped[..], &w.report.already, &w.report.updated].concat();
    governed.extend(w.report.rewrapped.iter().map(|(l, _)| l.clone()));
    assert_eq!(sorted(&again.report.already), sorted(&governed), "{name}");
    assert_eq!(
        sorted(&again.report.remote),
        sorted(&w.report.remote),
        "{name}"
    );
    let mut skipped = again.report.skipped.clone();
    let mut want = w.report.skipped.clone();
    skipped.sort();
    want.sort();
    assert_eq!(skipped, want, "{name}");
    assert_eq!(
        s.run(&w.text, &Op::wrap(THOTH)).text,
        w.text,
        "{name}: wrap after the strict wrap changed the file"
    );
    // Unwrap restores the bytes (for a file that had no wrapper), else the value a direct
    // unwrap gives.
    let had_wrapper = before.iter().any(|f| f.entry.is_wrapped());
    let u = s.run(&w.text, &Op::Unwrap);
    if had_wrapper {
        let direct = s.run(s.text, &Op::Unwrap);
        assert_eq!(
            value(&u.text, &fmt),
            value(&direct.text, &fmt),
            "{name}: unwrap"
        );
    } else {
        assert_eq!(u.text, s.text, "{name}: unwrap did not restore the bytes");
    }
    // The same through a plain wrap (no extra options): strict with no extra leaves it as is.
    let plain = s.run(s.text, &Op::wrap(THOTH));
    let strict_plain = s.run(&plain.text, &Op::wrap_strict(THOTH, Vec::new()));
    if !had_wrapper {
        assert_eq!(strict_plain.text, plain.text, "{name}: plain then strict");
        assert_eq!(
            s.run(&plain.text, &Op::Unwrap).text,
            s.text,
            "{name}: unwrap after a plain wrap"
        );
    }
    w.report
}

#[test]
fn every_valid_corpus_file_obeys_the_laws_for_its_host() {
    for c in &CORPORA {
        let mut n = 0;
        for path in corpus(c) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !file.starts_with("valid-") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let logical = PathBuf::from("/home/ann/x").join(logical_name(c.host, &file));
            let name = format!("{}/{file}", c.dir);
            check_laws(&Subject {
                name: &name,
                host: c.host,
                path: &logical,
                text: &text,
            });
            n += 1;
        }
        assert!(n >= 8, "{}: {n} valid files", c.dir);
    }
}

#[test]
fn valid_corpus_files_round_trip_as_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    for c in &CORPORA {
        for path in corpus(c) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !file.starts_with("valid-") {
                continue;
            }
            let dir = tmp.path().join(c.dir).join(&file);
            std::fs::create_dir_all(&dir).unwrap();
            let real = dir.join(logical_name(c.host, &file));
            std::fs::copy(&path, &real).unwrap();
            let original = std::fs::read(&real).unwrap();
            let op = Op::wrap_strict(THOTH, extra());
            let w = file::rewrite_file(c.host, &real, &op, false)
                .unwrap_or_else(|e| panic!("{}/{file}: {e}", c.dir));
            assert_eq!(w.written, w.report.changed(), "{}/{file}", c.dir);
            let again = file::rewrite_file(c.host, &real, &op, false).unwrap();
            assert!(!again.written, "{}/{file}: wrote twice", c.dir);
            file::rewrite_file(c.host, &real, &Op::Unwrap, false).unwrap();
            let had_wrapper = original != std::fs::read(&real).unwrap() && !w.written;
            if !had_wrapper && !file.contains("already-wrapped") {
                assert_eq!(
                    std::fs::read(&real).unwrap(),
                    original,
                    "{}/{file}: not restored",
                    c.dir
                );
            }
            // No lock directory, no temp file left.
            let left: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".lock") || n.contains(".thoth-tmp-"))
                .collect();
            assert!(left.is_empty(), "{}/{file}: {left:?}", c.dir);
        }
    }
}

#[test]
fn specific_files_keep_what_people_care_about() {
    let read = |dir: &str, f: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/corpus")
                .join(dir)
                .join(f),
        )
        .unwrap()
    };
    let op = Op::wrap_strict(THOTH, extra());
    let run = |host: &dyn Host, logical: &str, text: &str| {
        let p = PathBuf::from("/home/ann").join(logical);
        format::rewrite(text, &host.format(&p), &op, &host.ctx(&p)).unwrap()
    };
    // Claude Code: the user file's top-level and every project's servers; the remote ones
    // reported; the history and account untouched.
    let text = read("claude-code", "valid-big-user-file.json");
    let w = run(&ClaudeCode, ".claude.json", &text);
    let mut wrapped = w.report.wrapped.clone();
    wrapped.sort();
    assert_eq!(
        wrapped,
        [
            "airflow [/home/ann/work/data pipeline (old)]",
            "fetch [/tmp/scratch]",
            "github [/home/ann/src/thoth]",
            "memory",
            "postgres [/home/ann/src/thoth]",
            "time [/tmp/scratch]",
        ]
    );
    let mut remote = w.report.remote.clone();
    remote.sort();
    assert_eq!(
        remote,
        ["atlassian", "linear", "sentry [/home/ann/src/thoth]"]
    );
    assert!(w.text.contains("\"emailAddress\": \"ann.lee@example.com\""));
    assert!(
        !w.text.ends_with('\n'),
        "Claude Code's files end without a newline"
    );
    // A project's .mcp.json: only mcpServers, never a projects table in it.
    let text = read("claude-code", "valid-project-with-decoy.mcp-json.json");
    let w = run(&ClaudeCode, "p/.mcp.json", &text);
    assert_eq!(w.report.wrapped, ["real"]);
    assert!(w.text.contains("\"decoy\": {\"command\": \"not-read\"}"));
    // Odd project keys: the empty key, Windows paths, `~`, `.` and `/` in keys, Unicode; odd
    // values under the wildcard are passed over; broken entries are skipped with a reason.
    let text = read("claude-code", "valid-odd-project-keys.json");
    let w = run(&ClaudeCode, ".claude.json", &text);
    for l in [
        "empty-key-project []",
        "win [C:\\Users\\Ann\\src\\app]",
        "dots [/home/ann/a.b/c~d]",
        "café [/home/ann/été 🚀]",
        "outer [/home/ann/nested]",
        "fine [/home/ann/broken-entries]",
    ] {
        assert!(
            w.report.wrapped.iter().any(|x| x == l),
            "{l}: {:?}",
            w.report
        );
    }
    assert_eq!(w.report.wrapped.len(), 6, "{:?}", w.report);
    assert_eq!(w.report.skipped.len(), 4, "{:?}", w.report);
    // The escaped command moved as written, and came back.
    assert!(
        w.text.contains("\"--\", \"\\u006e\\u0070\\u0078\", \"-y\""),
        "{}",
        w.text
    );
    assert!(w.text.contains("\"command\": \"not-a-server-table\""));
    // VS Code: settings.json wraps only mcp.servers; mcp.json only servers.
    let text = read("vscode", "valid-settings-many.json");
    let w = run(&VsCode, "settings.json", &text);
    assert_eq!(w.report.wrapped, ["memory", "time"]);
    assert_eq!(w.report.remote, ["deepwiki"]);
    assert!(
        w.text
            .contains("\"someExtension.servers\": {\"x\": {\"command\": \"not-an-mcp-server\"}}")
    );
    assert!(
        w.text
            .contains("{\"decoy\": {\"command\": \"top-level-servers-is-not-read-in-settings\"}}")
    );
    assert!(w.text.contains("\"**/target\": true, // Rust\n"));
    let text = read("vscode", "valid-mcp-workspace.json");
    let w = run(&VsCode, "mcp.json", &text);
    assert!(!w.report.wrapped.iter().any(|l| l == "decoy"));
    assert!(
        w.text
            .contains("\"decoy\": {\"command\": \"not-in-this-file\"}")
    );
    assert!(
        w.text
            .contains("/* before command */ \"command\": /* between */"),
        "{}",
        w.text
    );
    let text = read("vscode", "valid-mcp-comments-trailing-commas.json");
    let w = run(&VsCode, "mcp.json", &text);
    assert_eq!(w.report.wrapped, ["Perplexity", "fetch"]);
    assert_eq!(w.report.remote, ["github", "legacy-sse"]);
    assert!(
        w.text.contains("\"mcp-server-fetch\", // the package\n"),
        "{}",
        w.text
    );
    assert!(w.text.contains("\"${input:perplexity-key}\""));
    // An empty VS Code file stays empty (and is no error).
    assert_eq!(run(&VsCode, "mcp.json", "").text, "");
    // Windsurf: serverUrl is remote; disabled entries are wrapped too (they may be enabled
    // later, from Windsurf's panel, without the agent seeing a change of command).
    let text = read("windsurf", "valid-basic.json");
    let w = run(&Windsurf, "mcp_config.json", &text);
    assert_eq!(w.report.remote, ["figma", "old-sse"]);
    assert_eq!(w.report.wrapped, ["github", "puppeteer", "git"]);
    let found = format::entries(&text, &Windsurf.format(Path::new("mcp_config.json"))).unwrap();
    let p = Path::new("mcp_config.json");
    let enabled: Vec<bool> = found
        .iter()
        .map(|f| Windsurf.enabled(p, &text, f))
        .collect();
    assert_eq!(enabled, [true, true, false, false, true]);
    // Claude Code: a project's disabledMcpServers turn its server off.
    let text = read("claude-code", "valid-big-user-file.json");
    let p = Path::new("/home/ann/.claude.json");
    let off: Vec<String> = format::entries(&text, &ClaudeCode.format(p))
        .unwrap()
        .iter()
        .filter(|f| !ClaudeCode.enabled(p, &text, f))
        .map(Found::label)
        .collect();
    assert_eq!(off, ["postgres [/home/ann/src/thoth]"]);
    // Windows paths and escapes in the command survive a round trip as values and bytes.
    let text = read("cursor", "valid-windows.json");
    let w = run(&Cursor, "mcp.json", &text);
    let v = value(&w.text, &Cursor.format(Path::new("mcp.json")));
    assert_eq!(v["mcpServers"]["exe"]["args"][9], "C:\\tools\\srv.exe");
    assert!(
        w.text.contains("\"C:\\\\tools\\\\srv.exe\"]}"),
        "{}",
        w.text
    );
}

#[test]
fn invalid_files_are_refused_with_a_position_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    for c in &CORPORA[1..] {
        let mut n = 0;
        for path in corpus(c) {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with("valid-") {
                continue;
            }
            n += 1;
            let dir = tmp.path().join(c.dir).join(&file);
            std::fs::create_dir_all(&dir).unwrap();
            let real = dir.join(logical_name(c.host, &file));
            std::fs::copy(&path, &real).unwrap();
            let before = std::fs::read(&real).unwrap();
            for op in [Op::wrap_strict(THOTH, extra()), Op::wrap(THOTH), Op::Unwrap] {
                let err = file::rewrite_file(c.host, &real, &op, false).unwrap_err();
                match (&err, file.starts_with("shape-")) {
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
                        let lines = before.split(|b| *b == b'\n').count();
                        assert!(
                            *line >= 1 && *line <= lines && *column <= 400,
                            "{}/{file}: {err}",
                            c.dir
                        );
                        assert!(err.to_string().contains("line"), "{err}");
                    }
                    (FileError::NotUtf8 { .. }, false) => {}
                    _ => panic!("{}/{file}: unexpected {err}", c.dir),
                }
                assert!(
                    err.to_string().contains(&file),
                    "{}/{file}: the error names the file: {err}",
                    c.dir
                );
                assert_eq!(std::fs::read(&real).unwrap(), before, "{}/{file}", c.dir);
            }
            let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert_eq!(names.len(), 1, "{}/{file}: a backup or temp file", c.dir);
        }
        assert!(n >= 5, "{}: {n} invalid files", c.dir);
    }
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
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

/// A JSON/JSONC value as text, made with random layout: inline or one item per line, comments
/// (JSONC) before keys, after values and after commas, trailing commas (JSONC).
enum J {
    /// A raw literal (string with its escapes, number, true…).
    Raw(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn s(raw: &str) -> J {
    J::Raw(raw.to_owned())
}

struct Writer<'r> {
    r: &'r mut Rng,
    jsonc: bool,
    indent: &'static str,
}

impl Writer<'_> {
    fn block_comment(&mut self) -> String {
        let c = self
            .r
            .pick(&["/* c */", "/**/", "/* \"command\": \"x\", */", "/* é 🚀 */"]);
        c.to_owned()
    }
    /// Space after a token on an inline line (maybe a block comment).
    fn gap(&mut self) -> String {
        if self.jsonc && self.r.chance(6) {
            format!(" {} ", self.block_comment())
        } else if self.r.chance(2) {
            " ".into()
        } else {
            String::new()
        }
    }
    /// A line break to `depth` (maybe preceded by a line comment or a blank line).
    fn newline(&mut self, depth: usize) -> String {
        let mut out = String::new();
        if self.jsonc && self.r.chance(6) {
            out.push_str(self.r.pick(&[" // note", " // \"args\": [\"--\"]", " //"]));
        }
        out.push('\n');
        if self.r.chance(12) {
            out.push('\n');
        }
        if self.jsonc && self.r.chance(10) {
            out.push_str(&self.indent.repeat(depth));
            out.push_str("// a whole-line comment\n");
        }
        out.push_str(&self.indent.repeat(depth));
        out
    }
    fn write(&mut self, j: &J, depth: usize, out: &mut String) {
        match j {
            J::Raw(r) => out.push_str(r),
            J::Arr(items) => {
                let multi = !items.is_empty() && self.r.chance(3);
                self.seq('[', ']', items.len(), multi, depth, out, |w, i, out| {
                    w.write(&items[i], depth + 1, out)
                });
            }
            J::Obj(props) => {
                let multi = !props.is_empty() && !self.r.chance(4);
                self.seq('{', '}', props.len(), multi, depth, out, |w, i, out| {
                    let (k, v) = &props[i];
                    out.push_str(k);
                    out.push(':');
                    let g = w.gap();
                    out.push_str(if g.is_empty() { " " } else { &g });
                    w.write(v, depth + 1, out);
                });
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn seq(
        &mut self,
        open: char,
        close: char,
        n: usize,
        multi: bool,
        depth: usize,
        out: &mut String,
        mut item: impl FnMut(&mut Self, usize, &mut String),
    ) {
        out.push(open);
        if n == 0 {
            if self.jsonc && self.r.chance(4) {
                let c = self.block_comment();
                out.push_str(&c);
            }
            out.push(close);
            return;
        }
        for i in 0..n {
            if multi {
                let nl = self.newline(depth + 1);
                out.push_str(&nl);
            } else if i > 0 || self.r.chance(3) {
                let g = self.gap();
                out.push_str(&g);
            }
            if self.jsonc && multi && self.r.chance(8) {
                let c = self.block_comment();
                out.push_str(&c);
                out.push(' ');
            }
            item(self, i, out);
            if i + 1 < n || (self.jsonc && self.r.chance(3)) {
                if self.jsonc && self.r.chance(8) {
                    let c = self.block_comment();
                    out.push(' ');
                    out.push_str(&c);
                }
                out.push(',');
            }
        }
        if multi {
            let nl = self.newline(depth);
            out.push_str(&nl);
        } else if self.r.chance(3) {
            out.push(' ');
        }
        out.push(close);
    }
}

const COMMANDS: [&str; 10] = [
    "\"npx\"",
    "\"\\u006e\\u0070\\u0078\"",
    "\"C:\\\\tools\\\\srv.exe\"",
    "\"/opt/mcp/bin/server\"",
    "\"uvx\"",
    "\"/Users/zoë/Документы/项目/mcp\"",
    "\"docker\"",
    "\"node\"",
    "\"with \\\"quotes\\\" and \\t tab\"",
    "\"\\/usr\\/bin\\/escaped-slash\"",
];
const ARGS: [&str; 9] = [
    "\"-y\"",
    "\"@modelcontextprotocol/server-filesystem\"",
    "\"${workspaceFolder}\"",
    "\"--\"",
    "\"run\"",
    "\"C:\\\\Users\\\\Ann\\\\\"",
    "\"🚀\"",
    "\"\"",
    "\"--flag=\\u0041\"",
];

fn server(r: &mut Rng, vscode: bool, windsurf: bool) -> J {
    let mut props: Vec<(String, J)> = Vec::new();
    match r.below(10) {
        0 => {
            props.push(("\"type\"".into(), s(r.pick(&["\"http\"", "\"sse\""]))));
            let key = if windsurf { "\"serverUrl\"" } else { "\"url\"" };
            props.push((key.into(), s("\"https://mcp.example.com/mcp\"")));
            if r.chance(2) {
                props.push((
                    "\"headers\"".into(),
                    J::Obj(vec![(
                        "\"Authorization\"".into(),
                        s("\"Bearer ${input:t}\""),
                    )]),
                ));
            }
        }
        1 => props.push(("\"url\"".into(), s("\"http://localhost:8931/sse\""))),
        _ => {
            if vscode || r.chance(3) {
                props.push(("\"type\"".into(), s("\"stdio\"")));
            }
            props.push(("\"command\"".into(), s(r.pick(&COMMANDS))));
            if !r.chance(4) {
                let args = (0..r.below(5)).map(|_| s(r.pick(&ARGS))).collect();
                props.push(("\"args\"".into(), J::Arr(args)));
            }
            if r.chance(3) {
                props.push((
                    "\"env\"".into(),
                    J::Obj(vec![("\"TOKEN\"".into(), s("\"s3cr\\u00e9t\""))]),
                ));
            }
            if r.chance(5) {
                props.push(("\"disabled\"".into(), s("true")));
            }
            if vscode && r.chance(4) {
                props.push(("\"envFile\"".into(), s("\"${workspaceFolder}/.env\"")));
            }
            // Key order is the user's: shuffle.
            for i in (1..props.len()).rev() {
                let j = r.below(i as u64 + 1) as usize;
                props.swap(i, j);
            }
        }
    }
    J::Obj(props)
}

fn servers(r: &mut Rng, vscode: bool, windsurf: bool) -> J {
    let names = [
        "\"files\"",
        "\"git\"",
        "\"données\"",
        "\"a.b\"",
        "\"\\u0066etch\"",
        "\"x y\"",
    ];
    let n = r.below(5) as usize;
    J::Obj(
        names[..n]
            .iter()
            .map(|k| ((*k).to_owned(), server(r, vscode, windsurf)))
            .collect(),
    )
}

/// A random config for `logical` (a host's file name), as text.
fn random_config(r: &mut Rng, host: &dyn Host, logical: &str) -> String {
    let path = Path::new(logical);
    let jsonc = jsonc(&host.format(path));
    let windsurf = host.id() == "windsurf";
    let mut top: Vec<(String, J)> = Vec::new();
    let filler = |r: &mut Rng| -> (String, J) {
        match r.below(4) {
            0 => ("\"numStartups\"".into(), s("187")),
            1 => ("\"editor.rulers\"".into(), J::Arr(vec![s("100"), s("120")])),
            2 => (
                "\"history\"".into(),
                J::Arr(vec![J::Obj(vec![(
                    "\"display\"".into(),
                    s("\"/mcp \\\"servers\\\"\""),
                )])]),
            ),
            _ => ("\"theme\"".into(), s("\"dark\"")),
        }
    };
    for _ in 0..r.below(3) {
        top.push(filler(r));
    }
    match (host.id(), logical) {
        ("vscode", "settings.json") => {
            let mut mcp = vec![("\"servers\"".into(), servers(r, true, false))];
            if r.chance(2) {
                mcp.insert(0, ("\"inputs\"".into(), J::Arr(Vec::new())));
            }
            top.push(("\"mcp\"".into(), J::Obj(mcp)));
            if r.chance(2) {
                // Not VS Code's: a top-level "servers" in settings.json.
                top.push(("\"servers\"".into(), servers(r, true, false)));
            }
        }
        ("vscode", _) => {
            if r.chance(2) {
                top.push((
                    "\"inputs\"".into(),
                    J::Arr(vec![J::Obj(vec![
                        ("\"type\"".into(), s("\"promptString\"")),
                        ("\"id\"".into(), s("\"t\"")),
                        ("\"password\"".into(), s("true")),
                    ])]),
                ));
            }
            top.push(("\"servers\"".into(), servers(r, true, false)));
        }
        ("claude-code", ".claude.json") => {
            if r.chance(4) {
                top.push(("\"mcpServers\"".into(), servers(r, false, false)));
            }
            let keys = [
                "\"/home/ann/src/thoth\"",
                "\"/home/ann/a b\"",
                "\"C:\\\\Users\\\\Ann\\\\p\"",
                "\"/tmp/\\u00e9\"",
                "\"\"",
            ];
            let mut projects = Vec::new();
            for k in &keys[..r.below(6) as usize] {
                let mut p = vec![(
                    "\"allowedTools\"".into(),
                    J::Arr(vec![s("\"Bash(cargo test:*)\"")]),
                )];
                match r.below(6) {
                    0 => p.push(("\"mcpServers\"".into(), J::Arr(Vec::new()))),
                    1 => {}
                    _ => p.push(("\"mcpServers\"".into(), servers(r, false, false))),
                }
                if r.chance(3) {
                    p.push((
                        "\"disabledMcpServers\"".into(),
                        J::Arr(vec![s("\"files\"")]),
                    ));
                }
                if r.chance(4) {
                    // Nested projects are not Claude Code's: never read.
                    p.push((
                        "\"projects\"".into(),
                        J::Obj(vec![(
                            "\"/x\"".into(),
                            J::Obj(vec![("\"mcpServers\"".into(), servers(r, false, false))]),
                        )]),
                    ));
                }
                projects.push(((*k).to_owned(), J::Obj(p)));
            }
            top.push(("\"projects\"".into(), J::Obj(projects)));
            if r.chance(2) {
                top.push(("\"mcpServers\"".into(), servers(r, false, false)));
            }
        }
        _ => top.push(("\"mcpServers\"".into(), servers(r, false, windsurf))),
    }
    for _ in 0..r.below(2) {
        top.push(filler(r));
    }
    let indent = r.pick(&["  ", "\t", "    "]);
    let mut text = String::new();
    if jsonc && r.chance(4) {
        text.push_str("// Generated.\n");
    }
    Writer { r, jsonc, indent }.write(&J::Obj(top), 0, &mut text);
    if r.chance(2) {
        text.push('\n');
    }
    if r.chance(3) {
        text = text.replace('\n', "\r\n");
    }
    if r.chance(5) {
        text.insert(0, '\u{feff}');
    }
    text
}

#[test]
fn generated_json_and_jsonc_configs_obey_the_laws() {
    let seed = std::env::var("THOTH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    let mut r = Rng(seed);
    let kinds: [(&dyn Host, &str); 6] = [
        (&ClaudeCode, ".claude.json"),
        (&ClaudeCode, ".mcp.json"),
        (&Cursor, "mcp.json"),
        (&VsCode, "mcp.json"),
        (&VsCode, "settings.json"),
        (&Windsurf, "mcp_config.json"),
    ];
    let mut wrapped = 0;
    for case in 0..600 {
        let (host, logical) = kinds[case % kinds.len()];
        let text = random_config(&mut r, host, logical);
        let path = PathBuf::from("/home/ann").join(logical);
        let name = format!(
            "generated case {case} for {} {logical} (THOTH_TEST_SEED={seed})",
            host.id()
        );
        if let Err(e) = format::json::parse(&text, jsonc(&host.format(&path))) {
            panic!("{name}: the generator wrote an invalid file ({e}):\n{text}");
        }
        let report = check_laws(&Subject {
            name: &name,
            host,
            path: &path,
            text: &text,
        });
        wrapped += report.wrapped.len();
    }
    assert!(wrapped > 600, "only {wrapped} entries wrapped");
}

/// A home laid out for `os`, with every JSON host's files; returns the files each host must
/// find.
fn lay_out_home(
    home: &Path,
    os: Os,
    project: &Path,
    workspace: &Path,
) -> Vec<(&'static str, PathBuf)> {
    let put = |p: &Path, text: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    let servers = "{\"mcpServers\": {\"a\": {\"command\": \"npx\"}}}";
    let mut want = Vec::new();
    // Claude Code: the user file names two projects; only the one with a .mcp.json counts.
    let claude = home.join(".claude.json");
    let url = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
    put(
        &claude,
        &format!(
            "{{\"projects\": {{{}: {{\"mcpServers\": {{}}}}, \"/nonexistent/p\": {{}}, \"relative/p\": {{}}}}}}",
            url(project)
        ),
    );
    want.push(("claude-code", claude));
    put(&project.join(".mcp.json"), servers);
    want.push(("claude-code", project.join(".mcp.json")));
    // Cursor and Windsurf: in the home, whatever the OS.
    put(&home.join(".cursor/mcp.json"), servers);
    want.push(("cursor", home.join(".cursor/mcp.json")));
    put(&home.join(".codeium/windsurf/mcp_config.json"), servers);
    want.push(("windsurf", home.join(".codeium/windsurf/mcp_config.json")));
    // VS Code: the profile's mcp.json and settings.json, a named profile's, Insiders', and a
    // workspace's .vscode/mcp.json found through workspaceStorage.
    let app = match os {
        Os::Linux => home.join(".config"),
        Os::MacOs => home.join("Library/Application Support"),
        Os::Windows => home.join("AppData/Roaming"),
    };
    for f in [
        "Code/User/mcp.json",
        "Code/User/settings.json",
        "Code/User/profiles/-5a1b2c3d/mcp.json",
        "Code - Insiders/User/mcp.json",
    ] {
        put(&app.join(f), "{}");
        want.push(("vscode", app.join(f)));
    }
    let encoded = workspace
        .display()
        .to_string()
        .replace('%', "%25")
        .replace(' ', "%20");
    put(
        &app.join("Code/User/workspaceStorage/0f3c9a/workspace.json"),
        &format!("{{\"folder\": \"file://{encoded}\"}}"),
    );
    put(
        &app.join("Code/User/workspaceStorage/77aa01/workspace.json"),
        "{\"folder\": \"vscode-remote://ssh-remote%2Bbox/home/ann/p\"}",
    );
    put(
        &app.join("Code/User/workspaceStorage/garbage/workspace.json"),
        "not json",
    );
    put(&workspace.join(".vscode/mcp.json"), "{\"servers\": {}}");
    want.push(("vscode", workspace.join(".vscode/mcp.json")));
    // Cursor's projects, through Cursor's own workspaceStorage: the workspace's .cursor/mcp.json
    // (its .vscode one is VS Code's), and the home opened as a project (its .cursor/mcp.json is
    // the user file, listed once).
    put(
        &app.join("Cursor/User/workspaceStorage/ab12/workspace.json"),
        &format!("{{\"folder\": \"file://{encoded}\"}}"),
    );
    let home_uri = home.display().to_string().replace(' ', "%20");
    put(
        &app.join("Cursor/User/workspaceStorage/cd34/workspace.json"),
        &format!("{{\"folder\": \"file://{home_uri}\"}}"),
    );
    put(&workspace.join(".cursor/mcp.json"), servers);
    want.push(("cursor", workspace.join(".cursor/mcp.json")));
    want
}

#[cfg(unix)]
#[test]
fn a_project_or_workspace_that_is_a_symlink_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home/ann");
    let project = tmp.path().join("src/project");
    let workspace = tmp.path().join("work/ws");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&workspace).unwrap();
    lay_out_home(&home, Os::Linux, &project, &workspace);
    let count = |host: &dyn Host, suffix: &str| {
        host.files(&home, Os::Linux)
            .iter()
            .filter(|f| f.ends_with(suffix))
            .count()
    };
    assert_eq!(count(&ClaudeCode, ".mcp.json"), 1);
    assert_eq!(count(&VsCode, ".vscode/mcp.json"), 1);
    assert_eq!(count(&Cursor, ".cursor/mcp.json"), 2);
    // The same folders, named through symbolic links in the user's files.
    let real_project = tmp.path().join("src/project-real");
    let real_workspace = tmp.path().join("work/ws-real");
    std::fs::rename(&project, &real_project).unwrap();
    std::fs::rename(&workspace, &real_workspace).unwrap();
    std::os::unix::fs::symlink(&real_project, &project).unwrap();
    std::os::unix::fs::symlink(&real_workspace, &workspace).unwrap();
    assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
    assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
    assert_eq!(count(&Cursor, ".cursor/mcp.json"), 1);
}

#[test]
fn each_host_finds_its_files_in_a_home_laid_out_for_each_os() {
    for os in [Os::Linux, Os::MacOs, Os::Windows] {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home/ann");
        let project = tmp.path().join("src/my project");
        let workspace = tmp.path().join("work/a space%20and %");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&workspace).unwrap();
        let want = lay_out_home(&home, os, &project, &workspace);
        for host in [&ClaudeCode as &dyn Host, &Cursor, &VsCode, &Windsurf] {
            let mut found = host.files(&home, os);
            found.sort();
            let mut expected: Vec<PathBuf> = want
                .iter()
                .filter(|(h, _)| *h == host.id())
                .map(|(_, p)| p.clone())
                .collect();
            expected.sort();
            assert_eq!(found, expected, "{} on {os:?}", host.id());
            // Every file found lies under a watched directory.
            let dirs = host.watch_dirs(&home, os);
            for f in &found {
                assert!(
                    dirs.iter().any(|d| f.parent() == Some(d.as_path())),
                    "{}: {} not watched ({dirs:?})",
                    host.id(),
                    f.display()
                );
            }
        }
        // Another OS's layout is not this one's (VS Code's app-data differs).
        let other = if os == Os::Linux {
            Os::MacOs
        } else {
            Os::Linux
        };
        assert!(
            !VsCode
                .files(&home, other)
                .iter()
                .any(|f| f.ends_with("Code/User/mcp.json")),
            "{os:?}"
        );
    }
}

/// Whether this process runs as root (a file it creates is owned by uid 0).
#[cfg(unix)]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

#[test]
fn projects_and_workspaces_of_someone_else_are_not_found() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::chown;
        if !is_root() {
            eprintln!("NOTE: not root: the ownership refusal (chown) is not exercised here");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home/ann");
        let project = tmp.path().join("src/project");
        let workspace = tmp.path().join("work/ws");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&workspace).unwrap();
        let want = lay_out_home(&home, Os::Linux, &project, &workspace);
        let ann = 4242;
        for (_, p) in &want {
            chown(p, Some(ann), Some(ann)).unwrap();
        }
        // Everything in Ann's home is hers (workspaceStorage's workspace.json files included:
        // they are read only as hers).
        fn chown_all(dir: &std::path::Path, uid: u32) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).unwrap();
                if e.file_type().unwrap().is_dir() {
                    chown_all(&p, uid);
                }
            }
        }
        chown_all(&home, ann);
        for d in [
            &home,
            &project,
            &workspace,
            &workspace.join(".vscode"),
            &workspace.join(".cursor"),
            &home.join(".cursor"),
        ] {
            chown(d, Some(ann), Some(ann)).unwrap();
        }
        let count = |host: &dyn Host, suffix: &str| {
            host.files(&home, Os::Linux)
                .iter()
                .filter(|f| f.ends_with(suffix))
                .count()
        };
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 1);
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 1);
        // The project directory belongs to someone else: its .mcp.json is not Ann's to have
        // root rewrite.
        chown(&project, Some(777), Some(777)).unwrap();
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
        // Ann's directory, but the file is someone else's (a hard link would look so).
        chown(&project, Some(ann), Some(ann)).unwrap();
        chown(project.join(".mcp.json"), Some(777), Some(777)).unwrap();
        assert_eq!(count(&ClaudeCode, ".mcp.json"), 0);
        // The same for a VS Code workspace, and for a Cursor project.
        assert_eq!(count(&Cursor, ".cursor/mcp.json"), 2);
        chown(&workspace, Some(777), Some(777)).unwrap();
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
        assert_eq!(count(&Cursor, ".cursor/mcp.json"), 1);
        chown(&workspace, Some(ann), Some(ann)).unwrap();
        chown(workspace.join(".vscode/mcp.json"), Some(777), Some(777)).unwrap();
        assert_eq!(count(&VsCode, ".vscode/mcp.json"), 0);
        // A symlinked project .mcp.json is listed (so its refusal is seen) but never read
        // through: rewriting it fails and the target is unchanged.
        let target = tmp.path().join("elsewhere.json");
        std::fs::write(&target, "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}").unwrap();
        std::fs::remove_file(project.join(".mcp.json")).unwrap();
        std::os::unix::fs::symlink(&target, project.join(".mcp.json")).unwrap();
        std::os::unix::fs::lchown(project.join(".mcp.json"), Some(ann), Some(ann)).unwrap();
        let link = project.join(".mcp.json");
        if ClaudeCode.files(&home, Os::Linux).contains(&link) {
            assert!(file::rewrite_file(&ClaudeCode, &link, &Op::wrap(THOTH), false).is_err());
        }
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}"
        );
    }
}
