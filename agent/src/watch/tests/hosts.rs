//! Every host of every user is wrapped, each event naming its host; only the hosts the agent's
//! settings and the policy both allow are touched; new homes are found, rediscovery is
//! rate-limited.

use std::path::PathBuf;

use serde_json::Value;
use thoth_hosts::host::{HostFilter, by_id};
use thoth_proto::EventType;

use super::super::guardian::REDISCOVER_EVERY;
use super::super::{config_filter, managed};
use super::{
    CODE, CODE_TEXT, CURSOR, DESKTOP, Laptop, PLAIN, VSCODE, VSCODE_TEXT, WINDSURF, example_config,
    read, settle, wrapped_for,
};
use crate::daemon::Shared;

#[test]
fn every_host_of_every_user_is_wrapped_and_each_event_names_its_host() {
    let l = Laptop::new(None);
    let files = [
        ("ann", DESKTOP, PLAIN, "claude-desktop", "Claude Desktop"),
        ("ann", CURSOR, PLAIN, "cursor", "Cursor"),
        ("ann", VSCODE, VSCODE_TEXT, "vscode", "VS Code"),
        ("ann", CODE, CODE_TEXT, "claude-code", "Claude Code"),
        ("bob", CURSOR, PLAIN, "cursor", "Cursor"),
        ("bob", WINDSURF, PLAIN, "windsurf", "Windsurf"),
    ];
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(u, rel, text, _, _)| l.put(u, rel, text))
        .collect();
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let wrapped = l.fake.events("CONFIG_WRAPPED");
    assert_eq!(wrapped.len(), files.len(), "{wrapped:#?}");
    for ((_, _, _, id, name), path) in files.iter().zip(&paths) {
        let text = read(path);
        let table: &[&str] = if *id == "vscode" {
            &["servers"]
        } else {
            &["mcpServers"]
        };
        assert!(wrapped_for(&text, table, "files", id), "{id}: {text}");
        let want = format!("{name}: {}: wrapped files (agent start)", path.display());
        assert!(
            wrapped.contains(&((*id).to_owned(), want.clone())),
            "{want} in {wrapped:#?}"
        );
        let st = l.fake.status(path).unwrap();
        assert_eq!((st.client.as_str(), st.state.as_str()), (*id, "governed"));
        assert_eq!(st.pickup, by_id(id).unwrap().pickup());
        assert_eq!(
            st.restart_needed,
            *id == "claude-desktop",
            "{id}: only Claude Desktop needs its restart"
        );
    }
    // JSONC: the comments and trailing commas are kept.
    let vscode = read(&paths[2]);
    assert!(
        vscode.starts_with("// my servers\n") && vscode.contains("/* the files */"),
        "{vscode}"
    );
    // Claude Code's other keys are kept.
    assert!(read(&paths[3]).contains("\"numStartups\": 3"));
    assert!(l.fake.events("CONFIG_DRIFT").is_empty());
    assert!(l.fake.events("MCP_SERVER_UNGOVERNED").is_empty());

    // A second full pass (a policy change) finds nothing to do.
    let before = l.fake.all_events();
    g.full_pass("policy changed", false);
    assert_eq!(
        l.fake.all_events(),
        before,
        "wrapping twice is wrapping once"
    );
}

#[test]
fn hosts_outside_the_config_and_the_policy_are_not_touched() {
    let l = Laptop::new(Some(&["cursor", "claude-desktop"]));
    *l.fake.policy.lock().unwrap() = (
        Some(1),
        Some(vec!["claude-desktop".into(), "vscode".into()]),
    );
    let desktop = l.put("ann", DESKTOP, PLAIN);
    let cursor = l.put("ann", CURSOR, PLAIN);
    let vscode = l.put("ann", VSCODE, VSCODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    assert!(wrapped_for(
        &read(&desktop),
        &["mcpServers"],
        "files",
        "claude-desktop"
    ));
    assert_eq!(read(&cursor), PLAIN, "cursor: not in the policy");
    assert_eq!(
        read(&vscode),
        VSCODE_TEXT,
        "vscode: not in the agent's settings"
    );
    assert!(l.fake.status(&cursor).is_none() && l.fake.status(&vscode).is_none());
    let events = l.fake.events("CONFIG_WRAPPED");
    assert_eq!(events.len(), 1, "{events:#?}");
    // An event on an unmanaged host's file changes nothing.
    g.on_event(&cursor);
    settle(&mut g);
    assert_eq!(read(&cursor), PLAIN);
    // The policy lets every client be managed: the next full pass wraps Cursor too.
    *l.fake.policy.lock().unwrap() = (Some(2), None);
    g.full_pass("policy changed", false);
    assert!(wrapped_for(
        &read(&cursor),
        &["mcpServers"],
        "files",
        "cursor"
    ));
    assert_eq!(
        read(&vscode),
        VSCODE_TEXT,
        "still not in the agent's settings"
    );
    // The policy narrows again: Cursor's file is left as it is, and no longer reported.
    *l.fake.policy.lock().unwrap() = (Some(3), Some(vec!["claude-desktop".into()]));
    let wrapped = read(&cursor);
    g.full_pass("policy changed", false);
    assert_eq!(read(&cursor), wrapped);
    assert!(l.fake.status(&cursor).is_none());
    assert!(l.fake.status(&desktop).is_some());
}

#[test]
fn new_homes_are_found_busy_homes_ignored_and_rediscovery_rate_limited() {
    let l = Laptop::new(None);
    l.put("ann", CODE, CODE_TEXT);
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    // A busy home: a file that is no client's changes: ignored at once.
    let noise = l.home("ann").join("notes.txt");
    std::fs::write(&noise, "x").unwrap();
    g.on_event(&noise);
    assert!(g.next_wake().is_none(), "nothing to do for another file");
    // A new home with a Cursor config: found through the users root's event.
    let carol = l.put("carol", CURSOR, PLAIN);
    g.on_event(&l.home("carol"));
    settle(&mut g);
    assert!(wrapped_for(
        &read(&carol),
        &["mcpServers"],
        "files",
        "cursor"
    ));
    // A new directory in a home (a client's first start) is rediscovered, not at once after
    // the last rediscovery.
    let dave = l.put("ann", ".codeium/windsurf/mcp_config.json", PLAIN);
    g.on_event(&l.home("ann").join(".codeium"));
    g.rediscover_pending();
    assert!(
        g.next_wake().is_some(),
        "rate-limited: {REDISCOVER_EVERY:?}"
    );
    assert_eq!(read(&dave), PLAIN, "not yet");
    settle(&mut g);
    assert!(wrapped_for(
        &read(&dave),
        &["mcpServers"],
        "files",
        "windsurf"
    ));
}

#[test]
fn the_clients_setting_is_checked_and_meets_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = example_config(dir.path());
    assert_eq!(config_filter(&config).unwrap(), HostFilter::all());
    config.clients = Some(vec!["cursor".into(), "zed".into()]);
    let e = config_filter(&config).unwrap_err();
    assert!(
        e.contains("\"zed\"") && e.contains("claude-desktop, claude-extension, claude-code"),
        "{e}"
    );
    assert!(
        !managed(&config, None).allows("cursor"),
        "an invalid setting manages nothing"
    );
    config.clients = Some(vec!["cursor".into(), "codex".into()]);
    let both = managed(&config, Some(&["codex".into(), "vscode".into()]));
    assert!(both.allows("codex") && !both.allows("cursor") && !both.allows("vscode"));
    config.clients = None;
    let policy = managed(&config, Some(&["vscode".into()]));
    assert!(policy.allows("vscode") && !policy.allows("claude-desktop"));
}

#[test]
fn the_policy_knows_every_host_the_agent_knows() {
    let hosts: Vec<&str> = thoth_hosts::host::all().iter().map(|h| h.id()).collect();
    assert_eq!(hosts, thoth_policy::KNOWN_CLIENTS);
}

#[test]
fn agent_events_about_a_client_carry_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let sh = Shared::new(example_config(dir.path())).unwrap();
    let e = sh.agent_event_about(
        EventType::McpServerUngoverned,
        Some("cursor"),
        Value::String("Cursor: ann: x".into()),
    );
    assert_eq!(e.client_name.as_deref(), Some("cursor"));
    let text = serde_json::to_string(&e).unwrap();
    assert!(
        text.contains("\"clientName\":\"cursor\"") && text.contains("MCP_SERVER_UNGOVERNED"),
        "{text}"
    );
    assert_eq!(
        sh.agent_event(EventType::AgentStarted, Value::Null)
            .client_name,
        None
    );
}
