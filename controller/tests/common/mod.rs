//! An in-process controller on 127.0.0.1:0 with real certificates, and real tonic clients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::VerifyingKey;
use thoth_client::{self as client, Credentials, Enrolled};
use thoth_controller::config::ControllerConfig;
use thoth_controller::pki::{Identity, Role};
use thoth_controller::{DataDir, Running, datadir, server};
use thoth_proto::fleet::{
    self as pb, admin_client::AdminClient, agent_sync_client::AgentSyncClient,
};
use tonic::transport::Channel;

pub(crate) const POLICY_A: &str = "name: a\nversion: 1\nservers:\n  - name: files\n    enforcement: block\n    approved_scope: [read_text_file]\n";
pub(crate) const POLICY_B: &str = "name: b\nversion: 2\nservers:\n  - name: files\n    enforcement: observe\n    approved_scope: [\"*\"]\n";

pub(crate) struct TestController {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub url: String,
}

impl TestController {
    pub(crate) async fn start() -> TestController {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(tune: impl FnOnce(&mut ControllerConfig)) -> TestController {
        let dir = tempfile::tempdir().unwrap();
        datadir::init(dir.path(), None).unwrap();
        let mut t = TestController {
            dir,
            running: None,
            url: String::new(),
        };
        t.boot(tune).await;
        t
    }

    pub(crate) async fn boot(&mut self, tune: impl FnOnce(&mut ControllerConfig)) {
        let mut data = DataDir::load(self.dir.path()).unwrap();
        tune(&mut data.config);
        let running = server::start_data_dir(
            data,
            "127.0.0.1:0".parse().unwrap(),
            Some("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        self.url = format!("https://{}", running.addr);
        self.running = Some(running);
    }

    pub(crate) async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await;
        self.boot(|_| {}).await;
    }

    pub(crate) fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub(crate) fn data(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    pub(crate) fn root(&self) -> VerifyingKey {
        DataDir::load(self.dir.path()).unwrap().root.verifying_key()
    }

    /// Credentials for an admin of `role`, limited to `tenant` when given.
    pub(crate) fn admin_creds(&self, name: &str, role: Role, tenant: Option<&str>) -> Credentials {
        let out = self.dir.path().join(format!("cred-{name}"));
        let data = DataDir::load(self.dir.path()).unwrap();
        datadir::write_admin_credential(
            &out,
            &data.ca,
            &Identity::Admin {
                name: name.into(),
                role,
                tenant: tenant.map(str::to_owned),
            },
            SystemTime::now(),
        )
        .unwrap();
        Credentials::from_dir(&out).unwrap()
    }

    pub(crate) async fn admin_as(&self, creds: &Credentials) -> AdminClient<Channel> {
        let ch = client::connect(&self.url, creds, Some(Duration::from_secs(20)))
            .await
            .unwrap();
        AdminClient::new(ch)
    }

    /// The init-made admin (role admin, all tenants).
    pub(crate) async fn admin(&self) -> AdminClient<Channel> {
        let creds = Credentials::from_dir(&self.dir.path().join("admin")).unwrap();
        self.admin_as(&creds).await
    }

    pub(crate) async fn token(&self, tenant: &str, uses: u32) -> String {
        self.admin()
            .await
            .create_token(pb::CreateTokenRequest {
                tenant: tenant.into(),
                max_uses: uses,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    pub(crate) async fn enroll(&self, tenant: &str) -> Enrolled {
        let token = self.token(tenant, 1).await;
        client::enroll(&self.url, &self.ca_pem(), &token, tenant, "test-host")
            .await
            .unwrap()
    }

    pub(crate) async fn sync(&self, agent: &Credentials) -> AgentSyncClient<Channel> {
        let ch = client::connect(&self.url, agent, None).await.unwrap();
        AgentSyncClient::new(ch)
    }

    /// An open policy subscription for an agent (its own tenant, nothing applied yet).
    pub(crate) async fn subscribe(
        &self,
        agent: &Credentials,
    ) -> tonic::Streaming<pb::PolicyUpdate> {
        self.sync(agent)
            .await
            .subscribe(pb::SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    pub(crate) async fn push(&self, tenant: &str, doc: &str) -> pb::PolicyVersion {
        self.admin()
            .await
            .push_policy(pb::PushPolicyRequest {
                tenant: tenant.into(),
                document: doc.into(),
                source: "test.yaml".into(),
                comment: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub(crate) async fn history(&self, tenant: &str) -> Vec<pb::PolicyVersion> {
        self.admin()
            .await
            .policy_history(pb::PolicyHistoryRequest {
                tenant: tenant.into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .versions
    }
}

/// Waits for the next update on a subscription, failing after `secs`.
pub(crate) async fn next_update(
    stream: &mut tonic::Streaming<pb::PolicyUpdate>,
    secs: u64,
) -> Result<pb::PolicyUpdate, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(secs), stream.message()).await {
        Ok(Ok(Some(u))) => Ok(u),
        Ok(Ok(None)) => Err(tonic::Status::cancelled("stream ended")),
        Ok(Err(s)) => Err(s),
        Err(_) => panic!("no update within {secs}s"),
    }
}

pub(crate) fn path(p: &Path) -> PathBuf {
    p.to_path_buf()
}

pub(crate) fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

// Raw HTTP/2, for tests that must send what no client library sends (requests that never
// end, calls on a connection held open by hand).

/// One HTTP/2 frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The HEADERS (and, when `body`, the DATA with an empty message) of a gRPC call on `stream`;
/// without `body` the request never ends.
pub(crate) fn grpc_request(stream: u32, path: &str, body: bool) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // Literal header field without indexing, new name, no Huffman.
        block.push(0);
        block.push(k.len() as u8);
        block.extend_from_slice(k.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    let mut out = frame(1, 0x4, stream, &block);
    if body {
        out.extend(frame(0, 0x1, stream, &[0, 0, 0, 0, 0]));
    }
    out
}
