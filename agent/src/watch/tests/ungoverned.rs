//! MCP_SERVER_UNGOVERNED: once per server and reason, escaped, at most 100 a pass.

use super::super::guardian::user_of;
use super::{CURSOR, Laptop, read, settle};

#[test]
fn an_ungoverned_server_is_reported_once_per_reason() {
    let l = Laptop::new(None);
    let text = |bad: &str| {
        format!(
            "{{\"mcpServers\": {{\"linear\": {{\"url\": \"https://mcp.linear.app/sse\"}}, \"files\": {{\"command\": \"npx\", \"args\": [\"x\"]}}, \"odd\": {{\"command\": \"npx\", \"args\": {bad}}}}}}}"
        )
    };
    let path = l.put("ann", CURSOR, &text("\"x\""));
    let ann = user_of(&l.home("ann"));
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 2, "{ung:#?}");
    assert!(ung.iter().all(|(c, _)| c == "cursor"), "{ung:?}");
    assert!(
        ung.iter().any(|(_, d)| d.starts_with(&format!(
            "Cursor: {ann}: linear (url https://mcp.linear.app/sse) is not governed: a remote server"
        ))),
        "{ung:#?}"
    );
    assert!(
        ung.iter().any(|(_, d)| d.starts_with(&format!(
            "Cursor: {ann}: odd (stdio) is not governed: the entry cannot be read"
        ))),
        "{ung:#?}"
    );
    assert_eq!(l.fake.status(&path).unwrap().state, "partly governed");
    // Not again while it stays so: a full pass, the file rewritten with the same servers.
    g.full_pass("policy changed", false);
    l.put("ann", CURSOR, &read(&path));
    g.on_event(&path);
    settle(&mut g);
    assert_eq!(l.fake.events("MCP_SERVER_UNGOVERNED").len(), 2);
    // Again when the reason changes.
    l.put("ann", CURSOR, &text("[1]"));
    g.on_event(&path);
    settle(&mut g);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 3, "{ung:#?}");
    assert!(ung[2].1.contains("odd (stdio)"), "{ung:#?}");
}

#[test]
fn names_and_targets_from_users_files_are_escaped_in_events() {
    let l = Laptop::new(None);
    l.put(
        "ann",
        CURSOR,
        r#"{"mcpServers": {"evil\u001b[2J\nCONFIG_OK": {"url": "https://x/\u0007"}}}"#,
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let ung = l.fake.events("MCP_SERVER_UNGOVERNED");
    assert_eq!(ung.len(), 1, "{ung:?}");
    let d = &ung[0].1;
    assert!(!d.chars().any(char::is_control), "{d:?}");
    let ann = user_of(&l.home("ann"));
    assert!(
        d.starts_with(&format!(
            "Cursor: {ann}: evil\\u{{1b}}[2J\\nCONFIG_OK (url https://x/\\u{{7}})"
        )),
        "{d}"
    );
}

#[test]
fn a_flood_of_ungoverned_servers_is_reported_in_bounded_passes() {
    let l = Laptop::new(None);
    let servers: Vec<String> = (0..250)
        .map(|i| format!("\"r{i:03}\": {{\"url\": \"https://x/{i}\"}}"))
        .collect();
    l.put(
        "ann",
        CURSOR,
        &format!("{{\"mcpServers\": {{{}}}}}", servers.join(", ")),
    );
    let mut g = l.guardian();
    g.full_pass("agent start", false);
    let count = || l.fake.events("MCP_SERVER_UNGOVERNED").len();
    assert_eq!(count(), 100, "at most 100 in one pass");
    g.full_pass("periodic check", true);
    assert_eq!(count(), 200, "the periodic check reports more");
    g.full_pass("periodic check", true);
    assert_eq!(count(), 250);
    g.full_pass("periodic check", true);
    g.full_pass("policy changed", false);
    assert_eq!(count(), 250, "each once");
    let mut names: Vec<String> = l
        .fake
        .events("MCP_SERVER_UNGOVERNED")
        .into_iter()
        .map(|(_, d)| d.split(' ').nth(2).unwrap().to_owned())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 250);
}
