//! `ListAgents` page by page (review finding F6): a fleet whose MCP inventories together pass
//! what one answer may carry is listed whole by the real `thothctl` (`agents list`, `inventory`),
//! every page stays far under the 64 MiB message limit, a page token is checked and bound to its
//! tenant, and another tenant's agents never appear across pages.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::TestController;
use prost::Message as _;
use thoth_client::Enrolled;
use thoth_controller::pki::Role;
use thoth_proto::fleet::{self as pb, admin_client::AdminClient};
use tonic::Code;
use tonic::transport::Channel;

/// What one page may hold, and the message limit thothctl and the controller use.
const PAGE_BYTES: usize = 16 << 20;
const MESSAGE_LIMIT: usize = 64 << 20;

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

/// The real `thothctl --json ARGS` as the init-made admin, parsed.
async fn thothctl_json(c: &TestController, args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(thothctl_bin());
    cmd.arg("--credentials")
        .arg(c.data().join("admin"))
        .args(["--controller", &c.url, "--json"])
        .args(args)
        .env_remove("THOTHCTL_CREDENTIALS")
        .env_remove("THOTH_CONTROLLER")
        .env_remove("THOTH_TENANT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "thothctl {args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("thothctl {args:?}: {e}: {stderr}"))
}

/// An inventory with `n` stdio servers of about 4 KiB of text each.
fn inventory(n: usize) -> pb::Inventory {
    let servers = (0..n)
        .map(|k| pb::McpServer {
            user: "alice".into(),
            client: "cursor".into(),
            file: "/home/alice/.cursor/mcp.json".into(),
            name: format!("srv{k}"),
            transport: "stdio".into(),
            target: format!("npx server-{k} {}", "x".repeat(4000)),
            governed: false,
            reason: "not wrapped".into(),
            enabled: true,
            scope: String::new(),
        })
        .collect();
    pb::Inventory {
        hostname: "laptop".into(),
        os_name: "Debian".into(),
        os_version: "12".into(),
        arch: "x86_64".into(),
        mcp_servers: servers,
        ..Default::default()
    }
}

async fn report(c: &TestController, agent: &Enrolled, inv: pb::Inventory) {
    c.sync(&agent.credentials)
        .await
        .report(pb::AgentReport {
            applied_version: 0,
            inventory: Some(inv),
            agent_version: "0.1.0".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every page of a listing; each answer's encoded size is checked against one page's budget.
async fn pages(
    admin: &mut AdminClient<Channel>,
    tenant: &str,
    page_size: u32,
    include_mcp: bool,
) -> Vec<Vec<pb::AgentInfo>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = admin
            .list_agents(pb::ListAgentsRequest {
                tenant: tenant.into(),
                page_size,
                page_token: token.clone(),
                include_mcp,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            r.encoded_len() <= PAGE_BYTES + 1024,
            "a page of {} bytes",
            r.encoded_len()
        );
        assert!(out.len() < 1000, "paging does not end");
        out.push(r.agents);
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
}

fn ids(agents: &[pb::AgentInfo]) -> BTreeSet<String> {
    agents.iter().map(|a| a.agent_id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_large_mcp_inventories_is_listed_whole_page_by_page() {
    let c = TestController::start().await;
    // 72 agents of ~470 KiB of MCP text each: ~34 MB together, over one page (16 MiB) and over
    // what an answer without paging may carry (32 MiB).
    const ALPHA: usize = 72;
    const SERVERS: usize = 115;
    let mut alpha = Vec::new();
    for _ in 0..ALPHA {
        let a = c.enroll("alpha").await;
        report(&c, &a, inventory(SERVERS)).await;
        alpha.push(a.agent_id);
    }
    let beta = c.enroll("beta").await;
    let mut secret = inventory(1);
    secret.mcp_servers[0].name = "beta-secret".into();
    report(&c, &beta, secret).await;
    let alpha_ids: BTreeSet<String> = alpha.iter().cloned().collect();

    let mut admin = AdminClient::new(
        thoth_client::connect(
            &c.url,
            &thoth_client::Credentials::from_dir(&c.data().join("admin")).unwrap(),
            None,
        )
        .await
        .unwrap(),
    )
    .max_decoding_message_size(MESSAGE_LIMIT);

    // With the MCP inventories, as many as asked (100) does not fit: pages end by size.
    let with_mcp = pages(&mut admin, "alpha", 100, true).await;
    assert!(with_mcp.len() >= 3, "{} pages", with_mcp.len());
    let all: Vec<pb::AgentInfo> = with_mcp.into_iter().flatten().collect();
    assert_eq!(all.len(), ALPHA);
    assert_eq!(ids(&all), alpha_ids);
    for a in &all {
        assert_eq!(a.inventory.as_ref().unwrap().mcp_servers.len(), SERVERS);
    }

    // Without them, one page; the rest of the inventory is there.
    let without = pages(&mut admin, "alpha", 500, false).await;
    assert_eq!(without.len(), 1);
    assert_eq!(ids(&without[0]), alpha_ids);
    for a in &without[0] {
        let inv = a.inventory.as_ref().unwrap();
        assert_eq!(inv.os_name, "Debian");
        assert!(inv.mcp_servers.is_empty());
    }

    // A client older than paging (no page_size) gets every agent at once, or a refusal when
    // they do not fit — never part of the fleet as if it were all of it.
    let old = admin
        .list_agents(pb::ListAgentsRequest {
            tenant: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.agents.len(), ALPHA + 1);
    assert!(old.next_page_token.is_empty());
    let err = admin
        .list_agents(pb::ListAgentsRequest {
            tenant: "alpha".into(),
            include_mcp: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // The real thothctl: `agents list --json` has every agent, whole (its MCP inventory too).
    let list = thothctl_json(&c, &["--tenant", "alpha", "agents", "list"]).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), ALPHA);
    let listed: BTreeSet<String> = list
        .iter()
        .map(|a| a["agentId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, alpha_ids);
    for a in list {
        assert_eq!(a["tenant"], "alpha");
        assert_eq!(
            a["inventory"]["mcpServers"].as_array().unwrap().len(),
            SERVERS
        );
    }
    let everyone = thothctl_json(&c, &["agents", "list"]).await;
    assert_eq!(everyone.as_array().unwrap().len(), ALPHA + 1);

    // `thothctl inventory --json`: every server on every agent.
    let inv = thothctl_json(&c, &["--tenant", "alpha", "inventory"]).await;
    let rows = inv["servers"].as_array().unwrap();
    assert_eq!(rows.len(), SERVERS);
    for r in rows {
        assert_eq!(r["instances"], ALPHA, "{}", r["name"]);
        let on: BTreeSet<String> = r["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["agentId"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(on, alpha_ids);
    }
    assert!(!inv.to_string().contains("beta-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_are_checked_and_bound_to_their_tenant() {
    let c = TestController::start().await;
    let mut alpha = BTreeSet::new();
    for _ in 0..7 {
        let a = c.enroll("alpha").await;
        report(&c, &a, inventory(2)).await;
        alpha.insert(a.agent_id);
    }
    let mut beta = BTreeSet::new();
    for _ in 0..3 {
        let b = c.enroll("beta").await;
        report(&c, &b, inventory(2)).await;
        beta.insert(b.agent_id);
    }
    let mut admin = c.admin().await;

    // All tenants, 2 at a time: every agent once.
    let all = pages(&mut admin, "", 2, true).await;
    assert_eq!(all.len(), 5);
    let all: Vec<pb::AgentInfo> = all.into_iter().flatten().collect();
    assert_eq!(all.len(), 10);
    assert_eq!(ids(&all), alpha.union(&beta).cloned().collect());

    // An operator of alpha, paging: alpha's agents only, whatever the page size.
    let op = c.admin_creds("olga", Role::Operator, Some("alpha"));
    let mut olga = c.admin_as(&op).await;
    for size in [1, 3, 100] {
        let got: Vec<pb::AgentInfo> = pages(&mut olga, "", size, false)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(ids(&got), alpha, "page size {size}");
        assert!(got.iter().all(|a| a.tenant == "alpha"));
    }

    let first = |tenant: &str| pb::ListAgentsRequest {
        tenant: tenant.into(),
        page_size: 2,
        ..Default::default()
    };
    let token_all = admin
        .list_agents(first(""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let token_alpha = admin
        .list_agents(first("alpha"))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(!token_all.is_empty() && !token_alpha.is_empty());
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let some_alpha = alpha.iter().next().unwrap().clone();
    let some_beta = beta.iter().next().unwrap().clone();
    let cases: Vec<(&str, &str, String)> = vec![
        ("garbage", "alpha", "not a token!".into()),
        ("too long", "alpha", "A".repeat(4000)),
        (
            "another version",
            "alpha",
            b64(&format!("v9\nalpha\nalpha\n{some_alpha}")),
        ),
        ("a bad agent id", "alpha", b64("v1\nalpha\nalpha\n../../x")),
        ("all tenants' token for one", "alpha", token_all.clone()),
        ("alpha's token for beta", "beta", token_alpha.clone()),
        ("alpha's token for all", "", token_alpha.clone()),
        (
            "a scope that names another tenant",
            "alpha",
            b64(&format!("v1\nalpha\nbeta\n{some_beta}")),
        ),
    ];
    for (what, tenant, token) in cases {
        let err = admin
            .list_agents(pb::ListAgentsRequest {
                tenant: tenant.into(),
                page_size: 2,
                page_token: token,
                include_mcp: false,
            })
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("page_token"), "{what}: {err:?}");
    }
    // A scoped operator cannot steer into another tenant with a made-up token either.
    for token in [
        b64(&format!("v1\nbeta\nbeta\n{some_beta}")),
        b64(&format!("v1\n\nalpha\n{some_alpha}")),
        token_all,
    ] {
        let err = olga
            .list_agents(pb::ListAgentsRequest {
                tenant: String::new(),
                page_size: 2,
                page_token: token,
                include_mcp: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    // Its own token works.
    let t = olga
        .list_agents(first(""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let next = olga
        .list_agents(pb::ListAgentsRequest {
            page_token: t,
            ..first("")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.agents.len(), 2);
    assert!(next.agents.iter().all(|a| a.tenant == "alpha"));
}
