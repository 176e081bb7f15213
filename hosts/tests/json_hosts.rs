//! The JSON hosts (Claude Code, Cursor, VS Code, Windsurf, and Claude Desktop again) through
//! the one rewrite, with each host's own format and context: a corpus of realistic files per
//! host and generated JSON/JSONC configs obey the laws (every stdio entry of every server table
//! wrapped with `--client <host>`; remote entries untouched and reported; nothing but `command`
//! and `args` changes; wrapping twice is wrapping once; unwrapping restores the bytes; the
//! agent's strict wrap of a wrapped file changes nothing), files that do not parse are refused
//! with a position and left byte for byte. How each host finds its files in a home laid out
//! for each OS is in `json_discovery.rs`).

mod common;
#[path = "json_hosts/generate.rs"]
mod generate;

use std::path::{Path, PathBuf};

use common::{Refusal, Rng, THOTH, name_of, refused_untouched, round_trip};
use serde_json::Value;
use thoth_hosts::clients::{
    claude_code::ClaudeCode, claude_desktop::ClaudeDesktop, cursor::Cursor, vscode::VsCode,
    windsurf::Windsurf,
};
use thoth_hosts::file;
use thoth_hosts::format::{self, Format, Found, Op, Rewritten};
use thoth_hosts::host::Host;
use thoth_hosts::wrapper::{self, NotGoverned};

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
    common::corpus(c.dir, 10)
}

pub(crate) fn jsonc(fmt: &Format) -> bool {
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

/// The laws, for one text that parses. Returns the strict wrap's report.
fn check_laws(s: &Subject<'_>) -> format::Report {
    let name = s.name;
    let fmt = s.fmt();
    let client = s.host.id();
    let ctx = s.host.ctx(s.path);
    let extra = extra();
    let strict = Op::wrap_strict(THOTH, extra.clone());
    let before = s.entries(s.text);
    let had_wrapper = before.iter().any(|f| f.entry.is_wrapped());
    // Wrap twice = wrap once (the agent's strict wrap of its own result changes nothing);
    // unwrap restores the bytes of a file that had no wrapper.
    let rt = round_trip(name, s.text, had_wrapper, &strict, |t, op| s.run(t, op));
    let w = rt.wrapped;
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
    // A plain `wrap-config` with the same thoth changes nothing either (below).
    let again = rt.again;
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
    // Unwrap gives, for a file that had a wrapper, the value a direct unwrap gives.
    if had_wrapper {
        let direct = s.run(s.text, &Op::Unwrap);
        assert_eq!(
            value(&rt.unwrapped.text, &fmt),
            value(&direct.text, &fmt),
            "{name}: unwrap"
        );
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
            let file = name_of(&path);
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
            let file = name_of(&path);
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
            let file = name_of(&path);
            if file.starts_with("valid-") {
                continue;
            }
            n += 1;
            let dir = tmp.path().join(c.dir).join(&file);
            std::fs::create_dir_all(&dir).unwrap();
            let real = dir.join(logical_name(c.host, &file));
            std::fs::copy(&path, &real).unwrap();
            let lines = common::lines(&std::fs::read(&real).unwrap());
            let ops = [Op::wrap_strict(THOTH, extra()), Op::wrap(THOTH), Op::Unwrap];
            let label = format!("{}/{file}", c.dir);
            let shape = file.starts_with("shape-");
            for r in refused_untouched(c.host, &real, &label, shape, &ops) {
                if let Refusal::At { line, column } = r {
                    assert!(
                        line >= 1 && line <= lines && column <= 400,
                        "{label}: {line}:{column}"
                    );
                }
            }
            let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert_eq!(names.len(), 1, "{}/{file}: a backup or temp file", c.dir);
        }
        assert!(n >= 5, "{}: {n} invalid files", c.dir);
    }
}

#[test]
fn generated_json_and_jsonc_configs_obey_the_laws() {
    let (mut r, seed) = Rng::seeded();
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
        let text = generate::random_config(&mut r, host, logical);
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
