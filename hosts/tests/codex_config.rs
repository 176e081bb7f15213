//! The Codex (TOML) config rewrite against a corpus of realistic files and generated ones:
//! wrap puts every stdio server behind `thoth run --client codex`, wrap → unwrap gives the
//! original bytes back, wrapping twice is wrapping once, nothing but servers' `command` and
//! `args` changes (checked with an independent parser, the `toml` crate), and files that do not
//! parse (or have the wrong shape) are never touched.

mod common;

use std::path::Path;

use common::{
    Refusal, Rng, THOTH, bare_lf, corpus_dir, endings_and_bom, name_of, refused_untouched,
    round_trip,
};
use thoth_hosts::clients::codex::Codex;
use thoth_hosts::file;
use thoth_hosts::format::{self, ConfigError, Op, Rewritten};
use thoth_hosts::host::{Host, Os};
use toml::{Table, Value};

const CORPUS: &str = "codex";

fn run(text: &str, op: &Op) -> Result<Rewritten, ConfigError> {
    let path = Path::new(".codex/config.toml");
    format::rewrite(text, &Codex.format(path), op, &Codex.ctx(path))
}

fn wrap(text: &str) -> Rewritten {
    run(text, &Op::wrap(THOTH)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn unwrap(text: &str) -> Rewritten {
    run(text, &Op::Unwrap).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The file as the `toml` crate reads it.
fn table(text: &str) -> Table {
    text.trim_start_matches('\u{feff}')
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn servers(t: &Table) -> Table {
    t.get("mcp_servers")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default()
}

/// The table with every server's command and args taken out (Debug text: NaN equals itself).
fn masked(t: &Table) -> String {
    let mut t = t.clone();
    if let Some(Value::Table(s)) = t.get_mut("mcp_servers") {
        for (_, e) in s.iter_mut() {
            if let Value::Table(e) = e {
                e.remove("command");
                e.remove("args");
            }
        }
    }
    format!("{t:?}")
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn is_wrapped(e: &Value) -> bool {
    let cmd = e.get("command").and_then(Value::as_str).unwrap_or("");
    let first = strings(e.get("args")).and_then(|a| a.first().cloned());
    thoth_hosts::wrapper::is_thoth_path(cmd) && first.as_deref() == Some("run")
}

/// The laws, for one text that parses.
fn check_laws(name: &str, text: &str) -> Rewritten {
    let original = table(text);
    let before = servers(&original);
    let had_wrapper = before.values().any(is_wrapped);
    let rt = round_trip(name, text, had_wrapper, &Op::wrap(THOTH), |t, op| {
        run(t, op).unwrap_or_else(|e| panic!("{name}: {e}\n{t}"))
    });
    let w = rt.wrapped;
    let wt = table(&w.text);
    assert_eq!(
        masked(&original),
        masked(&wt),
        "{name}: more than command and args changed\n{}",
        w.text
    );
    for (k, e) in servers(&wt) {
        let old = &before[&k];
        let skipped = w.report.skipped.iter().any(|(n, _)| *n == k);
        if old.get("command").is_some() && !skipped {
            assert!(is_wrapped(&e), "{name}: {k} is not wrapped: {e}");
            let args = strings(e.get("args")).unwrap();
            common::runs_thoth_for(
                &format!("{name}: {k}"),
                e["command"].as_str(),
                &args,
                &k,
                Some("codex"),
            );
            if !is_wrapped(old) {
                let sep = args.iter().position(|a| a == "--").unwrap();
                let mut orig = vec![old["command"].as_str().unwrap().to_owned()];
                let old_args = strings(old.get("args"));
                assert_eq!(
                    args[..sep].contains(&"--no-args".to_owned()),
                    old_args.is_none(),
                    "{name}: {k}"
                );
                orig.extend(old_args.unwrap_or_default());
                assert_eq!(args[sep + 1..], orig[..], "{name}: {k}");
            }
        } else {
            assert_eq!(&e, old, "{name}: {k} changed");
        }
    }
    // Unwrap gives the original back: the bytes (checked by the round trip) for a file that had
    // no wrapper, else what a direct unwrap gives.
    if had_wrapper {
        let direct = unwrap(text);
        assert_eq!(table(&rt.unwrapped.text), table(&direct.text), "{name}");
    }
    w
}

fn corpus() -> Vec<std::path::PathBuf> {
    common::corpus(CORPUS, 15)
}

#[test]
fn every_valid_corpus_file_round_trips() {
    let mut n = 0;
    for path in corpus() {
        let name = name_of(&path);
        if !name.starts_with("valid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let w = check_laws(&name, &text);
        assert!(
            w.report.skipped.is_empty(),
            "{name}: {:?}",
            w.report.skipped
        );
        n += 1;
    }
    assert!(n >= 15, "{n} valid corpus files");
}

#[test]
fn specific_files_keep_what_people_care_about() {
    let read = |n: &str| std::fs::read_to_string(corpus_dir(CORPUS).join(n)).unwrap();
    // Literal strings move into args as written, and back.
    let w = wrap(&read("valid-literal-strings-windows.toml"));
    assert!(
        w.text.contains(
            "\"--\", 'C:\\Program Files\\nodejs\\npx.cmd', '-y', \
             '@modelcontextprotocol/server-filesystem'"
        ),
        "{}",
        w.text
    );
    assert!(w.text.contains("cwd = 'D:\\work'"));
    // Escapes stay escapes.
    let w = wrap(&read("valid-escapes.toml"));
    assert!(
        w.text
            .contains("\"--\", \"/opt/caf\\u00e9/bin/server\", \"--name\""),
        "{}",
        w.text
    );
    assert!(w.text.contains("\"--server\", \"café\""), "{}", w.text);
    // CRLF and the BOM stay.
    let w = wrap(&read("valid-crlf.toml"));
    assert!(!bare_lf(&w.text), "{:?}", w.text);
    assert!(
        w.text.contains("  \"run\",\r\n  \"--server\",\r\n"),
        "{:?}",
        w.text
    );
    assert!(
        wrap(&read("valid-bom.toml"))
            .text
            .starts_with("\u{feff}[mcp_servers.files]\n")
    );
    // Multi-line arrays: one inserted element per line, comments and trailing commas kept.
    let w = wrap(&read("valid-multiline-arrays.toml"));
    assert!(
        w.text.contains(
            "args = [\n  # the package\n  \"run\",\n  \"--server\",\n  \"filesystem\",\n"
        ),
        "{}",
        w.text
    );
    assert!(
        w.text
            .contains("\"/home/ann/b\",  # trailing comma next\n]")
    );
    assert!(w.text.contains("args = [\"run\", \"--server\", \"empty\""));
    // Already wrapped: left alone; old thoth path: updated; plain: wrapped.
    let w = wrap(&read("valid-already-wrapped.toml"));
    assert_eq!(w.report.already, vec!["files", "no-args-wrapped"]);
    assert_eq!(w.report.updated, vec!["old-path"]);
    assert_eq!(w.report.wrapped, vec!["plain"]);
    // Remote entries are reported and untouched; disabled ones are wrapped and say so.
    let w = wrap(&read("valid-remote-url.toml"));
    assert_eq!(w.report.remote, vec!["linear", "figma"]);
    assert_eq!(w.report.wrapped, vec!["local"]);
    let found = format::entries(
        &read("valid-disabled.toml"),
        &Codex.format(Path::new("config.toml")),
    )
    .unwrap();
    assert_eq!(
        found
            .iter()
            .map(|f| (f.name.as_str(), f.entry.disabled, f.table.as_str()))
            .collect::<Vec<_>>(),
        vec![("off", true, "mcp_servers"), ("on", false, "mcp_servers")]
    );
    // Every layout of dotted keys and inline tables is found.
    let names = |f: &str| {
        format::entries(&read(f), &Codex.format(Path::new("config.toml")))
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names("valid-dotted-top-level.toml"),
        ["files", "sql lite", "bare"]
    );
    assert_eq!(
        names("valid-inline-under-table.toml"),
        ["files", "everything", "sentry"]
    );
    assert_eq!(names("valid-inline-top.toml"), ["files", "fetch", "docs"]);
    // Entries without args get them, in each layout.
    let w = wrap(&read("valid-dotted-top-level.toml"));
    assert!(
        w.text.contains(
            "mcp_servers.bare.command = \"/usr/local/bin/thoth\"\nmcp_servers.bare.args = [\"run\""
        ),
        "{}",
        w.text
    );
    let w = wrap(&read("valid-inline-under-table.toml"));
    assert!(
        w.text.contains(
            "sentry = { cwd = \"/home/ann\", command = \"/usr/local/bin/thoth\", args = [\"run\""
        ),
        "{}",
        w.text
    );
    let w = wrap(&read("valid-no-args.toml"));
    assert!(
        w.text.contains(
            "  command = \"/usr/local/bin/thoth\"   # indented, with a comment\n  args = [\"run\""
        ),
        "{}",
        w.text
    );
}

#[test]
fn the_agents_strict_wrap_rewraps_altered_wrappers() {
    let text = "[mcp_servers.files]\ncommand = \"/usr/local/bin/thoth\"\nargs = [\n  \"run\",\n  \
                \"--policy\", \"/tmp/allow-all.yaml\",\n  \"--server\", \"files\",\n  \"--\",\n  \
                'npx',\n  \"-y\",\n]\n";
    let w = run(text, &Op::wrap_strict(THOTH, vec![])).unwrap();
    assert_eq!(w.report.rewrapped.len(), 1, "{:?}", w.report);
    assert!(w.report.rewrapped[0].1.contains("added --policy"));
    let args = strings(servers(&table(&w.text))["files"].get("args")).unwrap();
    assert_eq!(
        args,
        [
            "run", "--server", "files", "--client", "codex", "--", "npx", "-y"
        ]
    );
    assert!(
        w.text.contains("  \"--\",\n  'npx',\n  \"-y\",\n]"),
        "{}",
        w.text
    );
    // Not strict (a standalone user): a thoth wrapper is left as it is.
    let w = run(text, &Op::wrap(THOTH)).unwrap();
    assert_eq!(w.report.already, vec!["files"]);
    assert_eq!(w.text, text);
    // Another thoth binary is drift for the agent.
    let other = text.replace("/usr/local/bin/thoth", "/tmp/thoth");
    let w = run(&other, &Op::wrap_strict(THOTH, vec![])).unwrap();
    assert!(w.report.rewrapped[0].1.contains("command /tmp/thoth"));
    assert_eq!(
        servers(&table(&w.text))["files"]["command"].as_str(),
        Some(THOTH)
    );
}

#[test]
fn invalid_files_are_refused_with_a_position_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for path in corpus() {
        let name = name_of(&path);
        if name.starts_with("valid-") {
            continue;
        }
        n += 1;
        let copy = tmp.path().join(&name);
        std::fs::copy(&path, &copy).unwrap();
        let lines = String::from_utf8_lossy(&std::fs::read(&copy).unwrap())
            .lines()
            .count()
            .max(1);
        let ops = [Op::wrap(THOTH), Op::Unwrap];
        for r in refused_untouched(&Codex, &copy, &name, name.starts_with("shape-"), &ops) {
            match r {
                Refusal::Shape(why) => assert!(why.contains("mcp_servers"), "{name}: {why}"),
                Refusal::At { line, column } => assert!(
                    (1..=lines + 1).contains(&line) && (1..=200).contains(&column),
                    "{name}: {line}:{column}"
                ),
                Refusal::NotUtf8 => {}
            }
        }
    }
    assert!(n >= 6, "{n} invalid and shape files");
    // The duplicate key is pointed at.
    let err = run(
        &std::fs::read_to_string(corpus_dir(CORPUS).join("invalid-duplicate-keys.toml")).unwrap(),
        &Op::Unwrap,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                line: 3,
                column: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_codex_host_finds_its_file_and_rewrites_it_on_disk() {
    let home = tempfile::tempdir().unwrap();
    assert!(Codex.files(home.path(), Os::Linux).is_empty());
    assert_eq!(
        Codex.watch_dirs(home.path(), Os::Linux),
        vec![home.path().join(".codex")]
    );
    let dir = home.path().join(".codex");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("config.toml");
    let original =
        std::fs::read_to_string(corpus_dir(CORPUS).join("valid-plain-tables.toml")).unwrap();
    std::fs::write(&path, &original).unwrap();
    assert_eq!(Codex.files(home.path(), Os::Windows), vec![path.clone()]);
    assert_eq!(
        thoth_hosts::host::host_of(&path, home.path()).map(|h| h.id()),
        Some("codex")
    );
    let out = file::rewrite_file(&Codex, &path, &Op::wrap(THOTH), false).unwrap();
    assert!(out.written);
    assert_eq!(out.report.wrapped, vec!["filesystem", "github"]);
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(on_disk.contains("\"--client\", \"codex\""));
    let mut backup = path.clone().into_os_string();
    backup.push(file::BACKUP_SUFFIX);
    assert_eq!(std::fs::read_to_string(backup).unwrap(), original);
    file::rewrite_file(&Codex, &path, &Op::Unwrap, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
}

/// Codex's random strings, keys and comments.
trait Toml {
    fn string(&mut self) -> String;
    fn literal(&mut self, s: &str) -> String;
    fn key(&mut self, s: &str) -> String;
    fn comment(&mut self) -> String;
}

impl Toml for Rng {
    fn string(&mut self) -> String {
        const PARTS: [&str; 18] = [
            "a", "Z", "0", "-", "_", " ", "/", "\\", "\"", "'", "é", "Ж", "项", "🚀", "\t",
            "\u{1}", "~", "C:\\x",
        ];
        self.string_of(&PARTS, 10)
    }
    /// A TOML literal for `s`, in one of the forms TOML has.
    fn literal(&mut self, s: &str) -> String {
        let literal_ok = !s.contains('\'') && !s.chars().any(|c| c.is_control() && c != '\t');
        match self.below(5) {
            0 if literal_ok => format!("'{s}'"),
            1 if literal_ok && !s.ends_with('\'') => format!("'''{s}'''"),
            2 => format!("\"\"\"{}\"\"\"", escape(s, false)),
            3 => format!("\"{}\"", escape(s, true)),
            _ => format!("\"{}\"", escape(s, false)),
        }
    }
    fn key(&mut self, s: &str) -> String {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && self.below(3) > 0
        {
            s.to_owned()
        } else {
            let unicode = self.chance(2);
            format!("\"{}\"", escape(s, unicode))
        }
    }
    fn comment(&mut self) -> String {
        if self.chance(4) {
            format!(" # {}", self.pick(&["note", "é 项 🚀", "a = [1", "\"x\""]))
        } else {
            String::new()
        }
    }
}

/// A basic-string body for `s` (`unicode`: non-ASCII as `\u` escapes).
fn escape(s: &str, unicode: bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if unicode && !c.is_ascii() && (c as u32) < 0x10000 => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c if unicode && !c.is_ascii() => out.push_str(&format!("\\U{:08X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One server's key-value pairs, as (key, value literal); `std`: may use multi-line arrays.
fn random_server(r: &mut Rng, std: bool) -> Vec<(String, String)> {
    if r.chance(8) {
        let url = format!("https://{}.example/mcp", r.below(99));
        return vec![("url".into(), r.literal(&url))];
    }
    let mut kvs = Vec::new();
    let mut keys = vec![
        "command",
        "args",
        "env",
        "cwd",
        "enabled",
        "startup_timeout_sec",
    ];
    r.shuffle(&mut keys);
    for k in keys {
        let v = match k {
            "command" => {
                let c = format!("cmd{}", r.string());
                r.literal(&c)
            }
            "args" if r.below(4) > 0 => {
                let args: Vec<String> = (0..r.below(5))
                    .map(|_| {
                        let s = r.string();
                        r.literal(&s)
                    })
                    .collect();
                if std && r.chance(2) {
                    // One per line, with comments and maybe a trailing comma.
                    let indent = r.pick(&["  ", "    ", "\t"]);
                    let mut out = String::from("[");
                    out.push_str(&r.comment());
                    for (i, a) in args.iter().enumerate() {
                        out.push('\n');
                        out.push_str(indent);
                        out.push_str(a);
                        if i + 1 < args.len() || r.chance(2) {
                            out.push(',');
                        }
                        out.push_str(&r.comment());
                    }
                    out.push_str("\n]");
                    out
                } else {
                    let sep = r.pick(&[", ", ",", " , "]);
                    let pad = r.pick(&["", " "]);
                    let trailing = if !args.is_empty() && r.chance(4) {
                        ","
                    } else {
                        ""
                    };
                    format!("[{pad}{}{trailing}{pad}]", args.join(sep))
                }
            }
            "env" if r.chance(2) => {
                let (a, b) = (r.string(), r.string());
                format!("{{ TOKEN = {}, PATH = {} }}", r.literal(&a), r.literal(&b))
            }
            "cwd" if r.chance(4) => {
                let s = r.string();
                r.literal(&s)
            }
            "enabled" if r.chance(4) => r.pick(&["true", "false"]).to_owned(),
            "startup_timeout_sec" if r.chance(4) => r.below(100).to_string(),
            _ => continue,
        };
        kvs.push((k.to_owned(), v));
    }
    if !kvs.iter().any(|(k, _)| k == "command") {
        kvs.push(("command".into(), "\"npx\"".into()));
    }
    kvs
}

fn inline(kvs: &[(String, String)]) -> String {
    let body: Vec<String> = kvs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", body.join(", "))
}

fn random_config(r: &mut Rng) -> String {
    let mut names = Vec::new();
    for _ in 0..r.below(7) {
        let n = match r.below(3) {
            0 => format!("s{}", r.below(1000)),
            1 => format!("s{}-{}", r.below(1000), r.pick(&["files", "git", "x_y"])),
            _ => format!("s{}{}", r.below(1000), r.string()),
        };
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut root = Vec::new();
    if r.chance(2) {
        root.push(format!("model = \"gpt-5\"{}", r.comment()));
    }
    if r.chance(3) {
        root.push("# a comment".to_owned());
    }
    let mut headers = Vec::new();
    match r.below(4) {
        // Dotted keys at the top level.
        0 => {
            for n in &names {
                let k = r.key(n);
                for (kk, v) in random_server(r, false) {
                    root.push(format!("mcp_servers.{k}.{kk} = {v}{}", r.comment()));
                }
            }
        }
        // One inline table for all.
        1 => {
            let mut all: Vec<(String, String)> = Vec::new();
            for n in &names {
                let k = r.key(n);
                let kvs = random_server(r, false);
                if r.chance(3) {
                    // Dotted keys inside the inline table.
                    all.extend(kvs.into_iter().map(|(kk, v)| (format!("{k}.{kk}"), v)));
                } else {
                    all.push((k, inline(&kvs)));
                }
            }
            root.push(format!("mcp_servers = {}{}", inline(&all), r.comment()));
        }
        // `[mcp_servers]` with dotted keys and inline tables, then `[mcp_servers.NAME]` tables.
        _ => {
            let mut under = vec![format!("[mcp_servers]{}", r.comment())];
            let mut tables = Vec::new();
            for n in &names {
                let k = r.key(n);
                let kvs = random_server(r, true);
                match r.below(3) {
                    0 => {
                        let dot = r.pick(&[".", " . "]);
                        for (kk, v) in kvs {
                            under.push(format!("{k}{dot}{kk} = {v}{}", r.comment()));
                        }
                    }
                    1 => under.push(format!(
                        "{k} = {}{}",
                        inline(&random_server(r, false)),
                        r.comment()
                    )),
                    _ => {
                        tables.push(String::new());
                        tables.push(format!("[mcp_servers.{k}]{}", r.comment()));
                        let indent = r.pick(&["", "", "  "]);
                        for (kk, v) in kvs {
                            tables.push(format!("{indent}{kk} = {v}{}", r.comment()));
                        }
                    }
                }
            }
            if r.chance(2) || tables.is_empty() {
                headers.extend(under);
            }
            headers.extend(tables);
        }
    }
    if r.chance(2) {
        headers.push("[profiles.fast]".into());
        headers.push("model = \"o3\"".into());
    }
    if r.chance(3) {
        headers.push("[[something]]".into());
        headers.push(format!("name = {}", r.literal("é")));
    }
    let mut lines = root;
    lines.extend(headers);
    let mut text = lines.join("\n");
    if r.below(4) > 0 {
        text.push('\n');
    }
    endings_and_bom(r, text)
}

#[test]
fn generated_configs_obey_the_round_trip_laws() {
    let (mut r, seed) = Rng::seeded();
    let mut wrapped = 0;
    for case in 0..600 {
        let text = random_config(&mut r);
        let name = format!("generated case {case} (THOTH_TEST_SEED={seed})");
        let w = check_laws(&name, &text);
        assert!(
            w.report.skipped.is_empty(),
            "{name}: {:?}\n{text}",
            w.report.skipped
        );
        wrapped += w.report.wrapped.len();
    }
    assert!(wrapped > 600, "only {wrapped} entries were wrapped");
}
