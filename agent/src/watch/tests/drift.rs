//! Drift: a wrapper removed, or running another thoth, or altered to opt out, is re-wrapped
//! once with CONFIG_DRIFT naming the host; Claude Code's own saves are not drift.

use std::path::PathBuf;

use serde_json::Value;

use super::{
    CODE, CODE_TEXT, CURSOR, DESKTOP, Laptop, PLAIN, THOTH, VSCODE, VSCODE_TEXT, read, settle,
    wrapped_for,
};

#[test]
fn drift_is_healed_on_each_host_and_the_event_names_the_host() {
    let l = Laptop::new(None);
    let cursor = l.put("ann", CURSOR, PLAIN);
    let vscode = l.put("bob", VSCODE, VSCODE_TEXT);
    let desktop = l.put("bob", DESKTOP, PLAIN);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let healed: Vec<(PathBuf, String)> = [&cursor, &vscode, &desktop]
        .iter()
        .map(|p| ((*p).clone(), read(p)))
        .collect();
    // Each file gets its unwrapped entry back, as a user or the client's settings page would.
    l.put("ann", CURSOR, PLAIN);
    l.put("bob", VSCODE, VSCODE_TEXT);
    l.put("bob", DESKTOP, PLAIN);
    for p in [&cursor, &vscode, &desktop] {
        g.on_event(p);
    }
    settle(&mut g);
    for (p, text) in &healed {
        assert_eq!(&read(p), text, "{} healed to the same text", p.display());
    }
    let drift = l.fake.events("CONFIG_DRIFT");
    assert_eq!(drift.len(), 3, "{drift:#?}");
    for (id, name, p) in [
        ("cursor", "Cursor", &cursor),
        ("vscode", "VS Code", &vscode),
        ("claude-desktop", "Claude Desktop", &desktop),
    ] {
        let want = format!(
            "{name}: {}: wrapper removed: files; re-wrapped",
            p.display()
        );
        assert!(
            drift.iter().any(|(c, d)| c == id && d.starts_with(&want)),
            "{want} in {drift:#?}"
        );
    }
    assert_eq!(
        l.fake.events("CONFIG_WRAPPED").len(),
        3,
        "drift, not new wraps"
    );
}

#[test]
fn claude_codes_own_rewrites_cause_no_write_and_no_event_and_its_stale_write_is_drift_once() {
    let l = Laptop::new(None);
    let path = l.put("ann", CODE, CODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let wrapped = read(&path);
    assert!(wrapped_for(
        &wrapped,
        &["mcpServers"],
        "files",
        "claude-code"
    ));
    let events = l.fake.all_events();
    // Claude Code saves its user state many times: the servers are as the agent left them.
    for n in 4..20 {
        let state = wrapped.replace("\"numStartups\": 3", &format!("\"numStartups\": {n}"));
        l.put("ann", CODE, &state);
        g.on_event(&path);
        g.on_event(&l.home("ann").join(".claude.json.lock"));
        settle(&mut g);
        assert_eq!(
            read(&path),
            state,
            "the agent wrote over Claude Code's save"
        );
    }
    assert_eq!(
        l.fake.all_events(),
        events,
        "no event for Claude Code's own saves"
    );
    // A stale save (from before the wrap) drops the wrapper: drift, re-wrapped once.
    let stale = CODE_TEXT.replace("\"numStartups\": 3", "\"numStartups\": 20");
    l.put("ann", CODE, &stale);
    g.on_event(&path);
    settle(&mut g);
    let healed = read(&path);
    assert!(healed.contains("\"numStartups\": 20"), "{healed}");
    assert!(wrapped_for(
        &healed,
        &["mcpServers"],
        "files",
        "claude-code"
    ));
    let drift = l.fake.events("CONFIG_DRIFT");
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0].0, "claude-code");
    assert!(drift[0].1.starts_with("Claude Code: "), "{drift:?}");
    // The event the agent's own write causes changes nothing.
    g.on_event(&path);
    settle(&mut g);
    assert_eq!(read(&path), healed);
    assert_eq!(l.fake.events("CONFIG_DRIFT").len(), 1, "no loop");
}

#[test]
fn a_wrapper_running_another_thoth_is_drift_on_first_sight() {
    // Edited while the agent was stopped: the agent's first look at the file.
    let l = Laptop::new(None);
    let state = l.dir.path().join("state").display().to_string();
    let sock = l.dir.path().join("agent.sock").display().to_string();
    let path = l.put(
        "ann",
        DESKTOP,
        &format!(
            r#"{{"mcpServers": {{"files": {{"command": "/home/ann/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--agent-socket", "{sock}", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]}}}}}}"#
        ),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let after: Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(after["mcpServers"]["files"]["command"], THOTH);
    let notes: Vec<String> = l
        .fake
        .events("CONFIG_DRIFT")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert!(
        notes
            .join("\n")
            .contains("command /home/ann/bin/thoth instead of /usr/local/bin/thoth"),
        "CONFIG_DRIFT, not a quiet path update: {notes:?}"
    );
    assert!(l.fake.events("CONFIG_WRAPPED").is_empty());
    assert_eq!(l.fake.status(&path).unwrap().state, "governed");
}

#[test]
fn an_opt_out_wrapper_is_drift_re_wrapped_and_not_counted_as_governed() {
    let l = Laptop::new(None);
    let state = l.dir.path().join("state").display().to_string();
    let sock = l.dir.path().join("agent.sock").display().to_string();
    let canonical = format!(
        r#"["run", "--server", "files", "--client", "claude-desktop", "--agent-socket", "{sock}", "--state-dir", "{state}", "--", "npx", "server-filesystem", "/home/ann"]"#
    );
    let path = l.put(
        "ann",
        DESKTOP,
        &format!(r#"{{"mcpServers": {{"files": {{"command": "{THOTH}", "args": {canonical}}}}}}}"#),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert_eq!(l.fake.all_events(), 0, "already canonical: nothing to do");
    assert_eq!(l.fake.status(&path).unwrap().state, "governed");
    // The user keeps `thoth run` but points it at their own policy, socket and state.
    let opted_out = r#"{"mcpServers": {"files": {"command": "/usr/local/bin/thoth", "args": ["run", "--server", "files", "--client", "claude-desktop", "--policy", "/home/ann/allow.yaml", "--agent-socket", "/home/ann/nosock", "--state-dir", "/home/ann/st", "--", "npx", "server-filesystem", "/home/ann"], "env": {"LD_PRELOAD": "/usr/lib/faketime/libfaketime.so.1", "FAKETIME": "+1d"}}}}"#;
    l.put("ann", DESKTOP, opted_out);
    assert!(g.process(&path, "the file changed"), "re-wrapped");
    let after: Value = serde_json::from_str(&read(&path)).unwrap();
    let want: Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(after["mcpServers"]["files"]["args"], want);
    let notes = l
        .fake
        .events("CONFIG_DRIFT")
        .into_iter()
        .map(|(_, d)| d)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        notes.contains("added --policy /home/ann/allow.yaml"),
        "CONFIG_DRIFT says what was added: {notes}"
    );
    assert!(
        notes.contains("LD_PRELOAD"),
        "the loader variable is reported: {notes}"
    );
    // env is the user's (only command and args are ever changed), so the entry stays
    // "partly governed" until it is removed; the proxy denies every call meanwhile.
    assert_eq!(l.fake.status(&path).unwrap().state, "partly governed");
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
    assert!(ung[0].1.contains("env sets LD_PRELOAD"), "{ung:?}");
    let reported = l.fake.all_events();
    assert!(!g.process(&path, "periodic check"));
    assert_eq!(l.fake.all_events(), reported, "reported once");
}
