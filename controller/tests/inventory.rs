//! The MCP inventory agents report (issue 15): bounded and checked as hostile input by the
//! controller, stored, returned by GetAgent/ListAgents, and shown by the real `thothctl`
//! (`agents show`, `inventory`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestController;
use thoth_proto::fleet::{self as pb, agent_sync_client::AgentSyncClient};
use tonic::transport::Channel;

/// `thothctl` (crate thothctl), built next to `thoth-controller`.
fn thothctl_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_thoth-controller"))
        .with_file_name(format!("thothctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        p.display()
    );
    p
}

/// The real `thothctl ARGS` as the init-made admin: (exit code, stdout, stderr).
async fn thothctl(c: &TestController, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(thothctl_bin());
    cmd.arg("--credentials")
        .arg(c.data().join("admin"))
        .args(["--controller", &c.url])
        .args(args)
        .env_remove("THOTHCTL_CREDENTIALS")
        .env_remove("THOTH_CONTROLLER")
        .env_remove("THOTH_TENANT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn thothctl_json(c: &TestController, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = thothctl(c, args).await;
    assert_eq!(code, 0, "thothctl {args:?}: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("thothctl {args:?}: {e}: {out}"))
}

#[allow(clippy::too_many_arguments)]
fn server(
    user: &str,
    client: &str,
    file: &str,
    name: &str,
    transport: &str,
    target: &str,
    governed: bool,
    reason: &str,
) -> pb::McpServer {
    pb::McpServer {
        user: user.into(),
        client: client.into(),
        file: file.into(),
        name: name.into(),
        transport: transport.into(),
        target: target.into(),
        governed,
        reason: reason.into(),
        enabled: true,
        scope: String::new(),
    }
}

const FILES: &str = "npx -y @modelcontextprotocol/server-filesystem /tmp";
const REMOTE: &str = "a remote server (URL): it runs elsewhere, not through a local wrapper";

fn inventory(
    hostname: &str,
    servers: Vec<pb::McpServer>,
    files: Vec<pb::McpFile>,
) -> pb::Inventory {
    pb::Inventory {
        hostname: hostname.into(),
        os_name: "Debian".into(),
        os_version: "12".into(),
        arch: "x86_64".into(),
        mcp_servers: servers,
        mcp_files: files,
        ..Default::default()
    }
}

async fn report(
    sync: &mut AgentSyncClient<Channel>,
    applied: u64,
    inv: pb::Inventory,
) -> Result<pb::ReportAck, tonic::Status> {
    sync.report(pb::AgentReport {
        applied_version: applied,
        inventory: Some(inv),
        agent_version: "0.1.0".into(),
        ..Default::default()
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn stored(c: &TestController, agent_id: &str) -> pb::AgentInfo {
    c.admin()
        .await
        .get_agent(pb::GetAgentRequest {
            agent_id: agent_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_inventory_round_trips_to_thothctl_agents_show_and_inventory() {
    let c = TestController::start().await;
    let a1 = c.enroll("acme").await;
    let a2 = c.enroll("acme").await;
    let desktop1 = "/home/alice/.config/Claude/claude_desktop_config.json";
    let mut project = server(
        "alice",
        "claude-code",
        "/home/alice/.claude.json",
        "db",
        "stdio",
        "uvx mcp-db --dsn 'postgres://localhost/app'",
        false,
        "not wrapped",
    );
    project.scope = "/home/alice/src/app".into();
    project.enabled = false;
    let servers1 = vec![
        server(
            "alice",
            "claude-desktop",
            desktop1,
            "files",
            "stdio",
            FILES,
            true,
            "",
        ),
        server(
            "bob",
            "claude-desktop",
            "/home/bob/.config/Claude/claude_desktop_config.json",
            "files",
            "stdio",
            FILES,
            true,
            "",
        ),
        project,
        // Not a control character, so the controller keeps it; thothctl escapes it.
        server(
            "alice",
            "cursor",
            "/home/alice/.cursor/mcp.json",
            "notes\u{202e}txt.exe",
            "http",
            "https://mcp.example.com/sse",
            false,
            REMOTE,
        ),
    ];
    let files1 = vec![pb::McpFile {
        user: "bob".into(),
        client: "codex".into(),
        path: "/home/bob/.codex/config.toml".into(),
        error: "line 3, column 7: expected `=`".into(),
    }];
    let inv1 = inventory("laptop-1", servers1.clone(), files1.clone());
    let servers2 = vec![server(
        "carol",
        "claude-desktop",
        "/home/carol/.config/Claude/claude_desktop_config.json",
        "files",
        "stdio",
        FILES,
        false,
        "wrapped with another thoth (/opt/old/thoth)",
    )];
    let inv2 = inventory("laptop-2", servers2.clone(), vec![]);
    report(&mut c.sync(&a1.credentials).await, 0, inv1)
        .await
        .unwrap();
    report(&mut c.sync(&a2.credentials).await, 0, inv2)
        .await
        .unwrap();

    // GetAgent gives back what the agent sent, field for field.
    let info = stored(&c, &a1.agent_id).await.inventory.unwrap();
    assert_eq!(info.mcp_servers, servers1);
    assert_eq!(info.mcp_files, files1);
    assert_eq!(info.os_name, "Debian");

    // `thothctl agents show --json`: the same, with camelCase keys.
    let j = thothctl_json(&c, &["--json", "agents", "show", &a1.agent_id]).await;
    let inv = &j["inventory"];
    assert_eq!(inv["mcpServers"].as_array().unwrap().len(), 4);
    assert_eq!(
        inv["mcpServers"][2],
        serde_json::json!({
            "user": "alice", "client": "claude-code", "file": "/home/alice/.claude.json",
            "name": "db", "transport": "stdio",
            "target": "uvx mcp-db --dsn 'postgres://localhost/app'", "governed": false,
            "reason": "not wrapped", "enabled": false, "scope": "/home/alice/src/app",
        })
    );
    assert_eq!(inv["mcpServers"][3]["name"], "notes\u{202e}txt.exe");
    assert_eq!(
        inv["mcpFiles"],
        serde_json::json!([{"user": "bob", "client": "codex",
            "path": "/home/bob/.codex/config.toml", "error": "line 3, column 7: expected `=`"}])
    );

    // `thothctl agents show` (text): per user, per client, per file; escaped.
    let (code, out, err) = thothctl(&c, &["agents", "show", &a1.agent_id]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("MCP servers        4 (2 governed, 2 not governed, of which 1 remote)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("claude-desktop  {desktop1}")),
        "{out}"
    );
    assert!(out.contains("(project /home/alice/src/app)"), "{out}");
    assert!(out.contains("notes\\u{202e}txt.exe"), "{out}");
    assert!(!out.contains('\u{202e}'), "{out}");
    assert!(
        out.contains("user bob  codex  /home/bob/.codex/config.toml: line 3, column 7"),
        "{out}"
    );

    // `thothctl inventory --json`: grouped by (client, name, target) across the fleet.
    let j = thothctl_json(&c, &["--json", "inventory"]).await;
    let rows = j["servers"].as_array().unwrap();
    let keys: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["client"].as_str().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("claude-code", "db"),
            ("claude-desktop", "files"),
            ("cursor", "notes\u{202e}txt.exe")
        ]
    );
    let files = &rows[1];
    assert_eq!(files["instances"], 3);
    assert_eq!(files["governed"], 2);
    assert_eq!(files["users"], serde_json::json!(["alice", "bob", "carol"]));
    let mut ids = [a1.agent_id.as_str(), a2.agent_id.as_str()];
    ids.sort();
    assert_eq!(files["agents"][0]["agentId"], ids[0]);
    assert_eq!(files["agents"].as_array().unwrap().len(), 2);
    assert_eq!(
        files["reasons"],
        serde_json::json!(["wrapped with another thoth (/opt/old/thoth)"])
    );
    assert_eq!(rows[2]["remote"], true);
    assert_eq!(rows[2]["governed"], 0);
    assert_eq!(
        j["unreadableFiles"][0]["path"],
        "/home/bob/.codex/config.toml"
    );
    assert_eq!(j["unreadableFiles"][0]["hostname"], "laptop-1");

    // --ungoverned, --host and its alias --client.
    let j = thothctl_json(&c, &["--json", "inventory", "--ungoverned"]).await;
    let rows = j["servers"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["instances"], 1);
    assert_eq!(rows[1]["agents"][0]["hostname"], "laptop-2");
    let by_host = thothctl_json(&c, &["--json", "inventory", "--host", "cursor"]).await;
    let by_client = thothctl_json(&c, &["--json", "inventory", "--client", "cursor"]).await;
    assert_eq!(by_host, by_client);
    assert_eq!(by_host["servers"].as_array().unwrap().len(), 1);
    assert_eq!(by_host["unreadableFiles"], serde_json::json!([]));

    // Text: the fleet table, escaped, with the summary line.
    let (code, out, err) = thothctl(&c, &["inventory"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2/3"), "{out}");
    assert!(out.contains("0/1 remote"), "{out}");
    assert!(
        out.contains("laptop-1 (alice, bob), laptop-2 (carol)"),
        "{out}"
    );
    assert!(!out.contains('\u{202e}'), "{out}");
    assert!(
        out.contains("3 servers, configured 5 times on 2 agents: 2 governed, 3 not (1 remote)"),
        "{out}"
    );

    // An unknown host id: a usage error naming the known ones.
    let (code, out, err) = thothctl(&c, &["inventory", "--host", "cursr"]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("unknown host \"cursr\""), "{err}");
    assert!(err.contains("claude-extension"), "{err}");

    // Another tenant sees none of it.
    let j = thothctl_json(&c, &["--json", "--tenant", "other", "inventory"]).await;
    assert_eq!(j, serde_json::json!({"servers": [], "unreadableFiles": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_and_control_character_inventories_are_refused_and_nothing_is_stored() {
    let c = TestController::start().await;
    let agent = c.enroll("acme").await;
    let mut sync = c.sync(&agent.credentials).await;
    let good = || {
        inventory(
            "laptop-1",
            vec![server(
                "alice",
                "cursor",
                "/home/alice/.cursor/mcp.json",
                "files",
                "stdio",
                FILES,
                true,
                "",
            )],
            vec![pb::McpFile {
                user: "alice".into(),
                client: "vscode".into(),
                path: "/home/alice/.config/Code/User/mcp.json".into(),
                error: "line 1, column 1: expected a value".into(),
            }],
        )
    };
    report(&mut sync, 1, good()).await.unwrap();
    let before = stored(&c, &agent.agent_id).await;
    assert_eq!(before.applied_version, 1);

    type Edit = Box<dyn Fn(&mut pb::Inventory)>;
    let s0 = |f: fn(&mut pb::McpServer)| -> Edit { Box::new(move |i| f(&mut i.mcp_servers[0])) };
    let f0 = |f: fn(&mut pb::McpFile)| -> Edit { Box::new(move |i| f(&mut i.mcp_files[0])) };
    let cases: Vec<(&str, Edit)> = vec![
        (
            "inventory.mcp_servers: 2001 servers, over the limit of 2000",
            Box::new(|i| {
                let one = i.mcp_servers[0].clone();
                i.mcp_servers = vec![one; 2001];
            }),
        ),
        (
            "inventory.mcp_files: 501 files, over the limit of 500",
            Box::new(|i| {
                let one = i.mcp_files[0].clone();
                i.mcp_files = vec![one; 501];
            }),
        ),
        (
            "bytes of text, over the 524288 byte limit",
            Box::new(|i| {
                let mut one = i.mcp_servers[0].clone();
                one.target = "x".repeat(600);
                i.mcp_servers = vec![one; 2000];
            }),
        ),
        (
            "inventory.mcp_servers[0].target is 4097 bytes, over the 4096 byte limit",
            s0(|s| s.target = "x".repeat(4097)),
        ),
        (
            "inventory.mcp_servers[0].name is 257 bytes, over the 256 byte limit",
            s0(|s| s.name = "n".repeat(257)),
        ),
        (
            "inventory.mcp_servers[0].user is 257 bytes",
            s0(|s| s.user = "u".repeat(257)),
        ),
        (
            "inventory.mcp_servers[0].file is 4097 bytes",
            s0(|s| s.file = "/".repeat(4097)),
        ),
        (
            "inventory.mcp_servers[0].scope is 4097 bytes",
            s0(|s| s.scope = "/".repeat(4097)),
        ),
        (
            "inventory.mcp_servers[0].reason is 1025 bytes, over the 1024 byte limit",
            s0(|s| s.reason = "r".repeat(1025)),
        ),
        (
            "inventory.mcp_servers[0].transport is 65 bytes",
            s0(|s| s.transport = "t".repeat(65)),
        ),
        (
            "inventory.mcp_servers[0].client: a host id is 1 to 32 characters",
            s0(|s| s.client = "Cursor".into()),
        ),
        (
            "inventory.mcp_servers[0].client: a host id",
            s0(|s| s.client = String::new()),
        ),
        (
            "inventory.mcp_servers[0].client: a host id",
            s0(|s| s.client = "c".repeat(33)),
        ),
        (
            "inventory.mcp_servers[0].client: a host id",
            s0(|s| s.client = "cur sor".into()),
        ),
        (
            "inventory.mcp_servers[0].name has a control character ('\\u{1b}')",
            s0(|s| s.name = "files\x1b[2J".into()),
        ),
        (
            "inventory.mcp_servers[0].target has a control character ('\\n')",
            s0(|s| s.target = "npx server\nroot# rm -rf /".into()),
        ),
        (
            "inventory.mcp_servers[0].user has a control character",
            s0(|s| s.user = "alice\u{9b}31m".into()),
        ),
        (
            "inventory.mcp_servers[0].reason has a control character",
            s0(|s| s.reason = "\x07".into()),
        ),
        (
            "inventory.mcp_files[0].path is 4097 bytes",
            f0(|f| f.path = "/".repeat(4097)),
        ),
        (
            "inventory.mcp_files[0].error is 1025 bytes",
            f0(|f| f.error = "e".repeat(1025)),
        ),
        (
            "inventory.mcp_files[0].client: a host id",
            f0(|f| f.client = "VSCODE".into()),
        ),
        (
            "inventory.mcp_files[0].error has a control character",
            f0(|f| f.error = "line 1\r\x1b]0;pwned\x07".into()),
        ),
    ];
    for (want, edit) in &cases {
        let mut inv = good();
        inv.mcp_servers[0].name = "changed".into();
        edit(&mut inv);
        let err = report(&mut sync, 7, inv).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}: {err:?}");
        assert!(
            err.message().contains(want),
            "want {want:?}, got {:?}",
            err.message()
        );
        // Nothing of the refused report is stored: not the inventory, not the version.
        let after = stored(&c, &agent.agent_id).await;
        assert_eq!(after.inventory, before.inventory, "{want}");
        assert_eq!(after.applied_version, 1, "{want}");
    }
    // Exactly at the limits is accepted.
    let mut inv = good();
    inv.mcp_servers[0].target = "x".repeat(4096);
    inv.mcp_servers[0].name = "n".repeat(256);
    inv.mcp_servers[0].client = "c".repeat(32);
    inv.mcp_servers[0].reason = "r".repeat(1024);
    inv.mcp_files = vec![inv.mcp_files[0].clone(); 500];
    report(&mut sync, 2, inv.clone()).await.unwrap();
    let after = stored(&c, &agent.agent_id).await;
    assert_eq!(after.applied_version, 2);
    assert_eq!(after.inventory.unwrap().mcp_servers, inv.mcp_servers);
}
