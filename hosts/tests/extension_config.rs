//! Claude Desktop extensions: the manifest engine against a corpus of realistic manifests and
//! registries and against generated ones (wrap → unwrap gives back every byte, wrapping twice is
//! wrapping once, only `command`/`args` change, and what runs on each platform is `thoth run …
//! -- <the command line that ran before>`), and files that do not parse left untouched. The
//! host's discovery of a user's extensions is in `extension_discovery.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::{Refusal, Rng, THOTH, bare_lf, refused_untouched, round_trip};
use serde_json::{Value, json};
use thoth_hosts::clients::claude_extension::{self, ClaudeExtension};
use thoth_hosts::format::manifest::{self, NO_MCP_CONFIG, PLATFORMS};
use thoth_hosts::format::{self, ConfigError, Op, Rewritten};
use thoth_hosts::host::Host;
use thoth_hosts::wrapper::{self, Entry};

const OTHER: &str = "/opt/old/thoth";
const CLIENT: &str = "claude-extension";
const CORPUS: &str = "claude-extension";

fn corpus(prefix: &str) -> Vec<(String, PathBuf)> {
    common::corpus_named(CORPUS, prefix)
}

/// The extension's path for a manifest of id `id` (the host's ctx takes the id from it).
fn manifest_path(id: &str) -> PathBuf {
    PathBuf::from(format!(
        "/home/ann/.config/Claude/Claude Extensions/{id}/manifest.json"
    ))
}

fn registry_path() -> PathBuf {
    PathBuf::from("/home/ann/.config/Claude/extensions-installations.json")
}

fn run(text: &str, path: &Path, op: &Op) -> Result<Rewritten, ConfigError> {
    format::rewrite(
        text,
        &ClaudeExtension.format(path),
        op,
        &ClaudeExtension.ctx(path),
    )
}

fn value(text: &str) -> Value {
    serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap()
}

/// What Claude runs on `platform`, computed here from the spec independently of the engine:
/// the base with the override's truthy `command`, `args`, `env`.
fn claude_runs(m: &Value, platform: &str) -> Option<(String, Vec<String>)> {
    let base = m.get("server")?.get("mcp_config")?.as_object()?;
    let ov = base
        .get("platform_overrides")
        .and_then(|o| o.get(platform))
        .and_then(Value::as_object);
    let truthy = |v: &&Value| match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    };
    let pick = |k: &str| {
        ov.and_then(|o| o.get(k))
            .filter(truthy)
            .or_else(|| base.get(k))
    };
    let cmd = pick("command")?.as_str()?.to_owned();
    let args = match pick("args") {
        Some(a) => a
            .as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
        None => Vec::new(),
    };
    Some((cmd, args))
}

/// The command line after `--` of a wrapped one, else itself.
fn inner(line: &(String, Vec<String>)) -> (String, Vec<String>) {
    let (cmd, args) = line;
    if wrapper::is_thoth_path(cmd) && args.first().map(String::as_str) == Some("run") {
        let sep = args
            .iter()
            .position(|a| a == "--")
            .expect("a wrapper has --");
        (args[sep + 1].clone(), args[sep + 2..].to_vec())
    } else {
        line.clone()
    }
}

/// `m` without the `command` and `args` of its base and overrides.
fn mask(m: &Value) -> Value {
    let mut v = m.clone();
    if let Some(mcp) = v
        .get_mut("server")
        .and_then(|s| s.get_mut("mcp_config"))
        .and_then(Value::as_object_mut)
    {
        mcp.remove("command");
        mcp.remove("args");
        if let Some(o) = mcp
            .get_mut("platform_overrides")
            .and_then(Value::as_object_mut)
        {
            for ov in o.values_mut().filter_map(Value::as_object_mut) {
                ov.remove("command");
                ov.remove("args");
            }
        }
    }
    v
}

/// The laws for one manifest `m` (before) and `w` (after a wrap by `thoth` with `extra`, as the
/// server `id`): only command/args changed, and on every platform Claude runs thoth with the
/// canonical head, then the command line it ran before.
fn check_wrapped_manifest(
    name: &str,
    id: &str,
    m: &Value,
    w: &Value,
    thoth: &str,
    extra: &[String],
) {
    assert_eq!(mask(m), mask(w), "{name}: more than command/args changed");
    for p in PLATFORMS {
        let Some(before) = claude_runs(m, p) else {
            assert_eq!(claude_runs(w, p), None, "{name}: {p}");
            continue;
        };
        let (cmd, args) = claude_runs(w, p).unwrap_or_else(|| panic!("{name}: {p} runs nothing"));
        assert_eq!(cmd, thoth, "{name}: on {p} thoth runs");
        let sep = args.iter().position(|a| a == "--").unwrap();
        let markers = wrapper::split_wrapped(&args).unwrap().2;
        assert_eq!(
            args[..sep],
            wrapper::canonical_head(id, CLIENT, extra, markers)[..],
            "{name}: on {p} the head is canonical"
        );
        assert_eq!(
            (args[sep + 1].clone(), args[sep + 2..].to_vec()),
            inner(&before),
            "{name}: on {p} the original command line runs after --"
        );
        // The engine's own view agrees.
        let e = manifest::effective(w, p);
        assert_eq!(e.command.as_deref(), Some(thoth), "{name}: {p}");
        assert_eq!(e.args.as_deref(), Some(&args[..]), "{name}: {p}");
        assert_eq!(
            wrapper::governed(id, CLIENT, &e, thoth, extra).map_err(|e| e.to_string()),
            if e.loader_variables().is_empty() {
                Ok(())
            } else {
                Err(format!("env sets {}", e.loader_variables().join(", ")))
            },
            "{name}: {p}"
        );
    }
}

/// The byte laws for one text at `path` (a manifest or the registry), and the per-manifest laws.
fn check_laws(name: &str, text: &str, path: &Path) {
    let strict = Op::wrap_strict(THOTH, vec![]);
    // Wrap twice = wrap once; unwrap gives back every byte.
    let rt = round_trip(name, text, false, &strict, |t, op| {
        run(t, path, op).unwrap_or_else(|e| panic!("{name}: {e}"))
    });
    let w = rt.wrapped;
    // Unwrapping an unwrapped file changes nothing.
    let uu = run(text, path, &Op::Unwrap).unwrap();
    assert_eq!(uu.text, text, "{name}");
    // An old wrapper (another thoth, another --client) re-wrapped by the agent, then unwrapped:
    // still the original bytes.
    let old = run(text, path, &Op::wrap(OTHER)).unwrap();
    let re = run(&old.text, path, &strict).unwrap();
    assert_eq!(re.text, w.text, "{name}: re-wrapping an old wrapper");
    assert_eq!(
        run(&re.text, path, &Op::Unwrap).unwrap().text,
        text,
        "{name}"
    );
    // Line endings (the BOM: by the round trip), as the manifest has them throughout.
    if !text.contains("\r\n") {
        assert!(!w.text.contains('\r'), "{name}: a CR appeared");
    } else {
        assert!(!bare_lf(&w.text), "{name}: a bare LF appeared");
    }
    // What runs.
    let (before, after) = (value(text), value(&w.text));
    if path.file_name().unwrap() == claude_extension::REGISTRY {
        let exts = before["extensions"].as_object().unwrap();
        for (id, ext) in exts {
            if ext["manifest"].is_object() {
                check_wrapped_manifest(
                    name,
                    id,
                    &ext["manifest"],
                    &after["extensions"][id]["manifest"],
                    THOTH,
                    &[],
                );
            }
        }
        let strip = |v: &Value| {
            let mut v = v.clone();
            for e in v["extensions"].as_object_mut().unwrap().values_mut() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("manifest");
                }
            }
            v
        };
        assert_eq!(
            strip(&before),
            strip(&after),
            "{name}: outside the manifests"
        );
    } else {
        let id = ClaudeExtension.ctx(path).server.unwrap().to_owned();
        check_wrapped_manifest(name, &id, &before, &after, THOTH, &[]);
    }
}

#[test]
fn every_valid_corpus_manifest_obeys_the_laws() {
    let files = corpus("valid-");
    assert!(files.len() >= 12, "the corpus is missing");
    for (name, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let id = format!("local.mcpb.corpus.{}", name.trim_end_matches(".json"));
        check_laws(&name, &text, &manifest_path(&id));
    }
}

#[test]
fn every_corpus_registry_obeys_the_laws() {
    let files: Vec<_> = corpus("registry-")
        .into_iter()
        .filter(|(n, _)| !n.contains("shape"))
        .collect();
    assert!(files.len() >= 2);
    for (name, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        check_laws(&name, &text, &registry_path());
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn head(id: &str, markers: &[&str]) -> Vec<String> {
    let mut h = s(&["run", "--server", id, "--client", CLIENT]);
    h.extend(s(markers));
    h.push("--".into());
    h
}

fn read(name: &str) -> String {
    common::read_corpus(CORPUS, name)
}

#[test]
fn every_platform_runs_the_effective_command_line_through_thoth() {
    let text = read("valid-binary-overrides-every-kind.json");
    let path = manifest_path("local.dxt.tools.grep-tool");
    let original = value(&text);
    // Before: what the spec says runs on each platform.
    let runs = |v: &Value, p| {
        let e: Entry = manifest::effective(v, p);
        (e.command.unwrap(), e.args.unwrap_or_default())
    };
    assert_eq!(
        runs(&original, "win32"),
        (
            "${__dirname}\\server\\grep-tool.exe".into(),
            s(&["--config", "${__dirname}\\server\\config-windows.json"])
        )
    );
    assert_eq!(
        runs(&original, "darwin"),
        (
            "${__dirname}/server/grep-tool-universal".into(),
            s(&["--config", "${__dirname}/server/config.json"])
        )
    );
    assert_eq!(
        runs(&original, "linux"),
        (
            "${__dirname}/server/grep-tool".into(),
            s(&[
                "--config",
                "${__dirname}/server/config-linux.json",
                "--no-mmap"
            ])
        )
    );
    assert_eq!(
        manifest::effective(&original, "linux").env_keys,
        s(&["GREP_TOOL_MODE"])
    );
    // After: thoth, the canonical head (its marker saying what the override lacked), `--`, and
    // exactly that command line.
    let w = run(&text, &path, &Op::wrap_strict(THOTH, vec![])).unwrap();
    let v = value(&w.text);
    let id = "local.dxt.tools.grep-tool";
    let mut want = head(id, &[]);
    want.extend(s(&[
        "${__dirname}\\server\\grep-tool.exe",
        "--config",
        "${__dirname}\\server\\config-windows.json",
    ]));
    assert_eq!(runs(&v, "win32"), (THOTH.into(), want));
    let mut want = head(id, &["--no-args"]);
    want.extend(s(&[
        "${__dirname}/server/grep-tool-universal",
        "--config",
        "${__dirname}/server/config.json",
    ]));
    assert_eq!(runs(&v, "darwin"), (THOTH.into(), want));
    let mut want = head(id, &["--no-command"]);
    want.extend(s(&[
        "${__dirname}/server/grep-tool",
        "--config",
        "${__dirname}/server/config-linux.json",
        "--no-mmap",
    ]));
    assert_eq!(runs(&v, "linux"), (THOTH.into(), want));
    // The overrides keep their shape: darwin's gained `args`, linux's has no `command`.
    let ovs = &v["server"]["mcp_config"]["platform_overrides"];
    assert!(ovs["linux"].get("command").is_none());
    assert_eq!(ovs["darwin"]["command"], THOTH);
    assert_eq!(
        w.report.wrapped,
        s(&[
            id,
            &format!("{id} (win32)"),
            &format!("{id} (darwin)"),
            &format!("{id} (linux)")
        ])
    );
    // The Windows command's literal moved as written (escapes included).
    assert!(w.text.contains(r#""${__dirname}\\server\\grep-tool.exe""#));
}

#[test]
fn specific_manifests_keep_what_people_care_about() {
    let strict = Op::wrap_strict(THOTH, vec![]);
    let at = |id: &str| manifest_path(id);
    // No mcp_config: reported, untouched; the inventory says why it is not governed.
    let text = read("valid-uv-no-mcp-config.json");
    let w = run(&text, &at("uv"), &strict).unwrap();
    assert_eq!(w.text, text);
    assert_eq!(
        w.report.skipped,
        vec![("uv".to_owned(), NO_MCP_CONFIG.to_owned())]
    );
    // An env-only override is untouched, and runs the wrapped base.
    let text = read("valid-override-env-only.json");
    let w = run(&text, &at("img"), &strict).unwrap();
    assert!(
        w.text
            .contains("\"env\": {\"DYLD_LIBRARY_PATH\": \"server/lib\"}")
    );
    let e = manifest::effective(&value(&w.text), "darwin");
    assert_eq!(e.loader_variables(), s(&["DYLD_LIBRARY_PATH"]));
    assert!(e.is_wrapped());
    // An override that sets only `command` over a base without args: `--no-args` and nothing
    // after its command.
    let text = read("valid-override-command-only-no-base-args.json");
    let w = run(&text, &at("clock"), &strict).unwrap();
    let v = value(&w.text);
    let mut want = head("clock", &["--no-args"]);
    want.push("${__dirname}/bin/clock.exe".into());
    assert_eq!(manifest::effective(&v, "win32").args.unwrap(), want);
    // Tabs: the added elements of a multi-line array sit one per line in its indentation.
    let w = run(&read("valid-tabs.json"), &at("tabbed"), &strict).unwrap();
    assert!(
        w.text
            .contains("[\n\t\t\t\t\t\t\"run\",\n\t\t\t\t\t\t\"--server\",\n"),
        "{}",
        w.text
    );
    // Unicode is not escaped; its escapes are kept as written.
    let w = run(&read("valid-unicode.json"), &at("données-équipe"), &strict).unwrap();
    assert!(w.text.contains("/Users/zoë/Документы/项目"));
    assert!(w.text.contains(r#""\u00e9t\u00e9""#));
    assert!(
        w.text.contains("\"--server\", \"données-équipe\""),
        "{}",
        w.text
    );
    // Without an id (a manifest.json somewhere else), the manifest's name is the server.
    let text = read("valid-python-sqlite.json");
    let ctx = format::Ctx {
        client: CLIENT,
        server: None,
    };
    let w = format::rewrite(&text, &format::Format::Manifest, &strict, &ctx).unwrap();
    assert_eq!(
        manifest::effective(&value(&w.text), "linux").args.unwrap()[2],
        "sqlite"
    );
    // Entries: the base and each override that sets command or args.
    let found = format::entries(
        &read("valid-binary-overrides-every-kind.json"),
        &format::Format::Manifest,
    )
    .unwrap();
    let tables: Vec<&str> = found.iter().map(|f| f.table.as_str()).collect();
    assert_eq!(
        tables,
        [
            "server.mcp_config",
            "server.mcp_config.platform_overrides.win32",
            "server.mcp_config.platform_overrides.darwin",
            "server.mcp_config.platform_overrides.linux"
        ]
    );
    assert!(found.iter().all(|f| f.name == "grep-tool"));
    // The registry: each copy as its id; the uv one and the broken one reported.
    let text = read("registry-crlf-unicode-uv.json");
    let w = run(&text, &registry_path(), &strict).unwrap();
    assert_eq!(w.report.wrapped, s(&["local.mcpb.zoë.données"]));
    let skipped: Vec<&str> = w.report.skipped.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(skipped, ["local.mcpb.example.hello-uv", "broken.copy"]);
    let found = format::entries(&text, &format::Format::ManifestRegistry).unwrap();
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|f| f.scope.as_deref() == Some(f.name.as_str()))
    );
}

#[test]
fn invalid_manifests_are_refused_with_a_position_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (name, path) in corpus("")
        .into_iter()
        .filter(|(n, _)| n.starts_with("invalid-") || n.contains("shape-"))
    {
        let copy = if name.starts_with("registry-") {
            let d = tmp.path().join(&name);
            std::fs::create_dir_all(&d).unwrap();
            d.join(claude_extension::REGISTRY)
        } else {
            let d = tmp.path().join(name.trim_end_matches(".json"));
            std::fs::create_dir_all(&d).unwrap();
            d.join(claude_extension::MANIFEST)
        };
        std::fs::copy(&path, &copy).unwrap();
        let ops = [Op::wrap(THOTH), Op::Unwrap];
        let shape = name.contains("shape-");
        for r in refused_untouched(&ClaudeExtension, &copy, &name, shape, &ops) {
            if let Refusal::At { line, column } = r {
                assert!(line >= 1 && column <= 200, "{name}: {line}:{column}");
            }
        }
        n += 1;
    }
    assert!(n >= 9, "{n} invalid corpus files");
}

/// An extension's random strings and values.
trait Values {
    fn string(&mut self) -> String;
    fn strings(&mut self) -> Vec<String>;
    fn scalar(&mut self) -> Value;
    fn any(&mut self, depth: u32) -> Value;
}

impl Values for Rng {
    fn string(&mut self) -> String {
        const PARTS: [&str; 20] = [
            "a",
            "Z",
            "0",
            "-",
            "_",
            " ",
            "/",
            "\\",
            "\"",
            "é",
            "Ж",
            "项",
            "🚀",
            "\t",
            "\u{1}",
            "${__dirname}",
            "${HOME}",
            "${user_config.dirs}",
            "--",
            "run",
        ];
        self.string_of(&PARTS, 6)
    }
    fn strings(&mut self) -> Vec<String> {
        (0..self.below(5)).map(|_| self.string()).collect()
    }
    fn scalar(&mut self) -> Value {
        match self.below(5) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.below(1000) as i64 - 500),
            _ => json!(self.string()),
        }
    }
    fn any(&mut self, depth: u32) -> Value {
        if depth == 0 {
            return self.scalar();
        }
        match self.below(4) {
            0 => Value::Array((0..self.below(3)).map(|_| self.any(depth - 1)).collect()),
            1 => Value::Object(
                (0..self.below(3))
                    .map(|_| (format!("k{}", self.string()), self.any(depth - 1)))
                    .collect(),
            ),
            _ => self.scalar(),
        }
    }
}

fn random_mcp_config(r: &mut Rng) -> Value {
    let mut keys = vec!["command", "args", "env", "overrides"];
    r.shuffle(&mut keys);
    let mut m = serde_json::Map::new();
    for k in keys {
        match k {
            "command" => {
                m.insert(
                    "command".into(),
                    json!(format!(
                        "{}{}",
                        r.pick(&["node", "python3", "${__dirname}/bin/s", "C:\\x.exe"]),
                        r.string()
                    )),
                );
            }
            "args" if r.below(3) > 0 => {
                m.insert("args".into(), json!(r.strings()));
            }
            "env" if r.below(2) == 0 => {
                m.insert(
                    "env".into(),
                    json!({"TOKEN": r.string(), "K": "${user_config.k}"}),
                );
            }
            "overrides" if r.below(3) > 0 => {
                let mut ovs = serde_json::Map::new();
                let mut plats = vec!["darwin", "win32", "linux", "freebsd"];
                r.shuffle(&mut plats);
                for p in plats.into_iter().take(r.below(5) as usize) {
                    let mut o = serde_json::Map::new();
                    let kind = r.below(4);
                    let mut okeys = vec!["command", "args", "env"];
                    r.shuffle(&mut okeys);
                    for ok in okeys {
                        match ok {
                            "command" if kind == 0 || kind == 1 => {
                                o.insert("command".into(), json!(format!("ov{}", r.string())));
                            }
                            "args" if kind == 0 || kind == 2 => {
                                o.insert("args".into(), json!(r.strings()));
                            }
                            "env" if kind == 3 || r.below(3) == 0 => {
                                o.insert("env".into(), json!({"X": r.string()}));
                            }
                            _ => {}
                        }
                    }
                    ovs.insert(p.into(), Value::Object(o));
                }
                m.insert("platform_overrides".into(), Value::Object(ovs));
            }
            _ => {}
        }
    }
    Value::Object(m)
}

fn random_manifest(r: &mut Rng) -> Value {
    let mut top = serde_json::Map::new();
    top.insert("manifest_version".into(), json!("0.3"));
    top.insert("name".into(), json!(format!("ext{}", r.string())));
    let mut server = serde_json::Map::new();
    server.insert(
        "type".into(),
        json!(r.pick(&["node", "python", "binary", "uv"])),
    );
    server.insert("entry_point".into(), json!("server/index.js"));
    if r.below(10) > 0 {
        server.insert("mcp_config".into(), random_mcp_config(r));
    }
    top.insert("server".into(), Value::Object(server));
    for _ in 0..r.below(3) {
        top.insert(format!("x{}", r.string()), r.any(3));
    }
    Value::Object(top)
}

#[test]
fn generated_manifests_and_registries_obey_the_laws() {
    let (mut r, seed) = Rng::seeded();
    for case in 0..400 {
        let m = random_manifest(&mut r);
        let text = common::render_json(&mut r, &m);
        let name = format!("generated manifest {case} (THOTH_TEST_SEED={seed}): {text}");
        check_laws(
            &name,
            &text,
            &manifest_path(&format!("local.mcpb.gen.{case}")),
        );
    }
    for case in 0..100 {
        let mut exts = serde_json::Map::new();
        for i in 0..r.below(4) {
            let id = format!("local.mcpb.gen{case}.{i}{}", r.string());
            exts.insert(
                id.clone(),
                json!({"id": id, "version": "1.0.0", "hash": r.string(), "manifest": random_manifest(&mut r), "source": "file"}),
            );
        }
        let text = common::render_json(&mut r, &json!({"extensions": exts}));
        let name = format!("generated registry {case} (THOTH_TEST_SEED={seed}): {text}");
        check_laws(&name, &text, &registry_path());
    }
}
