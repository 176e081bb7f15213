use thoth_proto::fleet as pb;

use super::*;

fn server(user: &str, client: &str, name: &str, target: &str, governed: bool) -> pb::McpServer {
    let remote = target.starts_with("https://");
    pb::McpServer {
        user: user.into(),
        client: client.into(),
        file: format!("/home/{user}/{client}.json"),
        name: name.into(),
        transport: if remote { "http" } else { "stdio" }.into(),
        target: target.into(),
        governed,
        reason: if governed {
            String::new()
        } else if remote {
            "a remote server (URL)".into()
        } else {
            "not wrapped".into()
        },
        enabled: true,
        scope: String::new(),
    }
}

fn agent(id: &str, hostname: &str, servers: Vec<pb::McpServer>) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: id.into(),
        hostname: hostname.into(),
        inventory: Some(pb::Inventory {
            hostname: hostname.into(),
            mcp_servers: servers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

const FILES: &str = "npx -y @modelcontextprotocol/server-filesystem /tmp";

fn fleet() -> Vec<pb::AgentInfo> {
    vec![
        agent(
            "agt-2",
            "laptop-2",
            vec![
                server("carol", "cursor", "files", FILES, false),
                server("carol", "claude-desktop", "files", FILES, true),
            ],
        ),
        agent(
            "agt-1",
            "laptop-1",
            vec![
                server("alice", "claude-desktop", "files", FILES, true),
                server("bob", "claude-desktop", "files", FILES, true),
                // An agent claiming a remote server governed is not believed.
                server(
                    "bob",
                    "claude-code",
                    "web",
                    "https://mcp.example.com/",
                    true,
                ),
            ],
        ),
        // An agent that sent no inventory yet.
        pb::AgentInfo {
            agent_id: "agt-3".into(),
            ..Default::default()
        },
    ]
}

#[test]
fn rows_group_by_client_name_and_target_with_where_and_governed_counts() {
    let agents = fleet();
    let (rows, files) = summarise(&agents, None, false);
    assert!(files.is_empty());
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.client.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("claude-code", "web"),
            ("claude-desktop", "files"),
            ("cursor", "files")
        ]
    );
    let desktop = &rows[1];
    assert_eq!((desktop.instances, desktop.governed), (3, 3));
    assert_eq!(desktop.agents.len(), 2);
    let (host, users) = &desktop.agents["agt-1"];
    assert_eq!(host, "laptop-1");
    assert_eq!(users.iter().collect::<Vec<_>>(), ["alice", "bob"]);
    let web = &rows[0];
    assert!(web.remote);
    assert_eq!((web.instances, web.governed), (1, 0));

    let j = summary_json(&rows, &files);
    assert_eq!(
        j["servers"][1]["users"],
        serde_json::json!(["alice", "bob", "carol"])
    );
    assert_eq!(j["servers"][1]["agents"][0]["agentId"], "agt-1");
    assert_eq!(j["servers"][0]["remote"], true);
    assert_eq!(j["servers"][0]["governed"], 0);
    // Stable: the same fleet in another order gives the same document.
    let mut reversed = fleet();
    reversed.reverse();
    let (r2, f2) = summarise(&reversed, None, false);
    assert_eq!(summary_json(&r2, &f2).to_string(), j.to_string());

    let text = summary_lines(&rows, &files, false).join("\n");
    assert!(
        text.contains("laptop-1 (alice, bob), laptop-2 (carol)"),
        "{text}"
    );
    assert!(text.contains("0/1 remote"), "{text}");
    assert!(
        text.contains("3 servers, configured 5 times on 2 agents: 3 governed, 2 not (1 remote)"),
        "{text}"
    );
}

#[test]
fn ungoverned_keeps_only_servers_not_governed_and_remote_ones() {
    let agents = fleet();
    let (rows, _) = summarise(&agents, None, true);
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.client.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(keys, [("claude-code", "web"), ("cursor", "files")]);
    assert!(rows.iter().all(|r| r.governed == 0));
    let text = summary_lines(&rows, &[], true).join("\n");
    assert!(text.contains("WHY NOT"), "{text}");
    assert!(text.contains("not wrapped"), "{text}");

    // Nothing left: said so.
    let governed = vec![agent(
        "agt-9",
        "h",
        vec![server("u", "cursor", "x", "x", true)],
    )];
    let (rows, files) = summarise(&governed, None, true);
    assert!(rows.is_empty());
    assert_eq!(
        summary_lines(&rows, &files, true),
        ["no ungoverned MCP servers reported"]
    );
}

#[test]
fn host_filter_keeps_one_client_and_an_unknown_host_lists_the_known_ones() {
    let mut agents = fleet();
    agents[0]
        .inventory
        .as_mut()
        .unwrap()
        .mcp_files
        .push(pb::McpFile {
            user: "carol".into(),
            client: "vscode".into(),
            path: "/home/carol/.config/Code/User/mcp.json".into(),
            error: "line 3, column 5: expected a value".into(),
        });
    let (rows, files) = summarise(&agents, Some("cursor"), false);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].client, "cursor");
    assert!(files.is_empty());
    let (rows, files) = summarise(&agents, Some("vscode"), false);
    assert!(rows.is_empty());
    assert_eq!(files.len(), 1);
    let text = summary_lines(&rows, &files, false).join("\n");
    assert!(text.contains("1 host files could not be read"), "{text}");
    assert!(text.contains("expected a value"), "{text}");

    for h in HOSTS {
        assert!(check_host(h, &[]).is_ok(), "{h}");
    }
    let err = check_host("cursr", &agents).err().unwrap();
    assert_eq!(err.code, 2);
    assert!(
        err.message.contains("unknown host \"cursr\""),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(
            "claude-desktop, claude-extension, claude-code, cursor, vscode, windsurf, codex"
        ),
        "{}",
        err.message
    );
    // A client a newer agent reports is known too.
    let zed = vec![agent(
        "agt-z",
        "z",
        vec![server("u", "zed", "x", "x", false)],
    )];
    assert!(check_host("zed", &zed).is_ok());
    let err = check_host("nope", &zed).err().unwrap();
    assert!(err.message.ends_with("codex, zed"), "{}", err.message);
}

#[test]
fn what_agents_report_cannot_drive_the_terminal() {
    let evil = "files\x1b]52;c;AAAA\x07\x1b[2J\u{202e}txt.exe\r\nroot# \u{9b}31m";
    let mut s = server("alice\x1b[31m", "cursor", evil, evil, false);
    s.reason = evil.into();
    s.file = evil.into();
    s.scope = evil.into();
    let mut a = agent("agt-1", "laptop-1", vec![s]);
    a.inventory.as_mut().unwrap().mcp_files.push(pb::McpFile {
        user: evil.into(),
        client: "cursor".into(),
        path: evil.into(),
        error: evil.into(),
    });
    let agents = vec![a];
    let (rows, files) = summarise(&agents, None, false);
    let mut lines = summary_lines(&rows, &files, false);
    lines.extend(summary_lines(&rows, &files, true));
    lines.extend(show_lines(agents[0].inventory.as_ref().unwrap()));
    let all = lines.join("\n");
    for bad in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
        assert!(!all.contains(bad), "{bad:?} reaches the terminal: {all:?}");
    }
    assert!(all.contains("files\\u{1b}]52;c;AAAA\\u{7}"), "{all}");
    assert!(all.contains("\\u{202e}txt.exe\\u{d}\\u{a}root# "), "{all}");
    // Lines stay lines: an embedded newline does not start a new one.
    assert!(lines.iter().all(|l| !l.contains('\n')));
    // JSON escapes them its own way.
    let j = summary_json(&rows, &files).to_string();
    assert!(!j.contains('\x1b') && j.contains("\\u001b"));
}

#[test]
fn safe_and_clip() {
    assert_eq!(safe("plain naïve"), "plain naïve");
    assert_eq!(safe("a\tb\x7f"), "a\\u{9}b\\u{7f}");
    assert_eq!(clip("abcdef", 4), "abc…");
    assert_eq!(clip("abcd", 4), "abcd");
    // Cut after escaping: the escape's length counts.
    assert_eq!(clip("\x1b[2J", 5), "\\u{1…");
}

#[test]
fn show_groups_per_user_client_and_file_and_lists_unreadable_files() {
    let mut servers = vec![
        server(
            "bob",
            "claude-code",
            "web",
            "https://mcp.example.com/",
            false,
        ),
        server("alice", "cursor", "files", FILES, false),
        server("alice", "claude-desktop", "files", FILES, true),
    ];
    let mut project = server("alice", "claude-code", "db", "uvx mcp-db", true);
    project.file = "/home/alice/.claude.json".into();
    project.scope = "/home/alice/src/app".into();
    project.enabled = false;
    servers.push(project);
    let inv = pb::Inventory {
        mcp_servers: servers,
        mcp_files: vec![pb::McpFile {
            user: "bob".into(),
            client: "codex".into(),
            path: "/home/bob/.codex/config.toml".into(),
            error: "line 2, column 1: invalid key".into(),
        }],
        ..Default::default()
    };
    let lines = show_lines(&inv);
    let text = lines.join("\n");
    assert!(
        lines[0].contains("4 (2 governed, 2 not governed, of which 1 remote)"),
        "{text}"
    );
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} missing from\n{text}"))
    };
    // alice before bob; within alice, clients in order; each file with its servers.
    assert!(
        at("user alice")
            < at("claude-code  /home/alice/.claude.json  (project /home/alice/src/app)")
    );
    assert!(
        at("(project /home/alice/src/app)") < at("claude-desktop  /home/alice/claude-desktop.json")
    );
    assert!(
        at("claude-desktop  /home/alice/claude-desktop.json")
            < at("cursor  /home/alice/cursor.json")
    );
    assert!(at("cursor  /home/alice/cursor.json") < at("user bob"));
    let db = &lines[at("uvx mcp-db")];
    assert!(
        db.contains("db") && db.contains(" yes ") && db.contains(" no "),
        "{db}"
    );
    let web = &lines[at("https://mcp.example.com/")];
    assert!(
        web.contains("remote") && web.contains("a remote server (URL)"),
        "{web}"
    );
    assert!(text.contains("unreadable files   1"), "{text}");
    assert!(
        text.contains(
            "user bob  codex  /home/bob/.codex/config.toml: line 2, column 1: invalid key"
        ),
        "{text}"
    );
}

#[test]
fn a_summary_added_page_by_page_is_the_summary_of_all() {
    let agents = fleet();
    let (rows, files) = summarise(&agents, None, false);
    let whole = summary_json(&rows, &files);
    for split in 0..=agents.len() {
        let mut s = Summary::default();
        s.add(&agents[..split], None, false);
        s.add(&agents[split..], None, false);
        let (r, f) = s.finish();
        assert_eq!(summary_json(&r, &f), whole, "split at {split}");
    }
}
