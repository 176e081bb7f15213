use super::*;

/// User-name lookups (blocking `getpwuid_r`) in this test process.
pub(super) static LOOKUPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Review L13: every refused connection looked its user's name up (a blocking
/// `getpwuid_r`, NSS/LDAP on a managed laptop) inside the accept loop, before the
/// once-a-minute limiter. Now the message is built only when it is logged.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_do_not_look_user_names_up_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../thoth-agent.example.toml");
    let mut c: thoth_endpoint::config::AgentConfig = toml::from_str(text).unwrap();
    c.state_dir = dir.path().join("state");
    c.socket_path = dir.path().join("agent.sock");
    c.wrap_configs = false;
    let sh = super::super::Shared::new(c).unwrap();
    let limits = Limits::with(1, 64, 1 << 20, 4 << 20, Owners::default());
    let server = serve_with(Arc::clone(&sh), limits).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(
            tokio::net::UnixStream::connect(&sh.config.socket_path)
                .await
                .unwrap(),
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.limits.refused() < 39 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} refused",
            server.limits.refused()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let n = LOOKUPS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(n <= 1, "{n} user-name lookups for 39 refused connections");
    drop(held);
    server.stop().await;
}

fn owners() -> Owners {
    Owners::parse(
        "# comment\nUID_MAX\t\t\t60000\n",
        "alice:100000:65536\n1001:165536:65536\n",
        |n| (n == "alice").then_some(1000),
    )
}

#[test]
fn subordinate_uids_draw_on_their_owners_budget_and_others_keep_theirs() {
    let o = owners();
    assert_eq!(o.key(1000), 1000);
    assert_eq!(o.key(100_005), 1000);
    assert_eq!(o.key(165_536 + 7), 1001);
    assert_eq!(o.key(4_000_000), UNKNOWN_UID);
    // 4 connections per user, 64 in all (as 128 / 4096 on a real agent).
    let limits = Limits::with(4, 64, 1 << 20, 16 << 20, o);
    // 32 sub-uids of alice try 128 connections each: they get alice's 4, in all.
    let mut held = Vec::new();
    for sub in 0..32 {
        for _ in 0..128 {
            if let Some(s) = limits.connect(100_000 + sub) {
                held.push(s);
            }
        }
    }
    assert_eq!(
        held.len(),
        4,
        "alice's sub-uids held {} connections",
        held.len()
    );
    // Uids nobody owns share one small bucket.
    let strays: Vec<_> = (0..1000)
        .filter_map(|i| limits.connect(5_000_000 + i))
        .collect();
    assert_eq!(strays.len(), 4);
    // Root, alice herself (at her cap: refused) and another user.
    assert!(limits.connect(0).is_some());
    assert!(limits.connect(1000).is_none());
    assert!(limits.connect(1002).is_some());
    // Bytes too: alice's sub-uids share her 1 MiB.
    assert!(limits.take_bytes(100_001, 1 << 19));
    assert!(limits.take_bytes(100_002, 1 << 19));
    assert!(!limits.take_bytes(100_003, 1));
    assert!(limits.take_bytes(1002, 1 << 19));
}

#[test]
fn many_users_cannot_fill_the_totals_root_and_light_users_keep_a_share() {
    // 8 connections and 1 MiB per user; 32 connections and 8 MiB in all.
    let limits = Limits::with(8, 32, 1 << 20, 8 << 20, Owners::default());
    let mut held = Vec::new();
    for uid in 1000..1003 {
        while let Some(s) = limits.connect(uid) {
            held.push(s);
        }
    }
    // Heavy users stop at three quarters of the total...
    assert!(limits.connect(1000).is_none());
    assert_eq!(held.len(), 24);
    // ...a user holding nothing still gets in, and past the next eighth root alone does.
    let light: Vec<_> = (2000..2100).filter_map(|u| limits.connect(u)).collect();
    assert_eq!(light.len(), 4);
    let root: Vec<_> = (0..8).filter_map(|_| limits.connect(0)).collect();
    assert_eq!(root.len(), 4);
    assert!(limits.connect(2200).is_none());
    drop((held, light, root));

    let mut heavy = 0;
    for uid in 1000..1006 {
        while limits.take_bytes(uid, 256 << 10) {
            heavy += 256 << 10;
        }
    }
    assert_eq!(heavy, 6 << 20, "heavy users held {heavy} bytes");
    assert!(limits.take_bytes(2001, 64 << 10), "a light user is refused");
    let mut light = 64 << 10;
    for uid in 2002..2100 {
        while limits.take_bytes(uid, 64 << 10) {
            light += 64 << 10;
        }
    }
    assert_eq!(light, 1 << 20, "light users held {light} bytes");
    assert!(limits.take_bytes(0, 1 << 20), "root is refused");
    assert!(!limits.take_bytes(0, 1));
    // Released bytes come back to the totals.
    for uid in 1000..1100 {
        limits.release_bytes(uid, 1 << 20);
    }
    assert!(limits.take_bytes(1000, 1 << 20));
}

/// Review H1/M1: a WatchPolicy stream was checked once, when it opened, and then served
/// policy for as long as it stayed open. Now its process is checked again on a timer, and
/// the stream ends with the refusal.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_policy_stream_is_checked_again_and_ends_when_refused() {
    use futures_util::StreamExt as _;
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../../thoth-agent.example.toml");
    let mut c: thoth_endpoint::config::AgentConfig = toml::from_str(text).unwrap();
    c.state_dir = dir.path().join("state");
    c.socket_path = dir.path().join("agent.sock");
    c.wrap_configs = false;
    c.thoth_path = Some(sleep.clone());
    let sh = super::super::Shared::new(c).unwrap();
    // The "proxy": a process running the installed binary.
    let mut child = std::process::Command::new(&sleep)
        .arg("30")
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() != Some(&sleep) {
        assert!(std::time::Instant::now() < deadline, "sleep did not start");
        tokio::task::yield_now().await;
    }
    let conn = super::super::peer::ConnInfo {
        uds: tonic::transport::server::UdsConnectInfo {
            peer_addr: None,
            peer_cred: None,
        },
        process: super::super::peer::Process::of(pid),
        checked: Arc::default(),
    };
    let svc = LocalService(Arc::clone(&sh), Limits::new(4, 64, 1 << 20));
    let mut req = Request::new(pb::LocalPolicyRequest {
        server_name: "s".into(),
    });
    req.extensions_mut().insert(conn);
    let mut stream = local_agent_server::LocalAgent::watch_policy(&svc, req)
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    // The process goes: the next check refuses, and the stream says so and ends.
    child.kill().unwrap();
    child.wait().unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
        .await
        .expect("the open stream was not checked again");
    let refused = next.unwrap().unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(stream.next().await.is_none());
}
