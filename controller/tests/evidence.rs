//! Signed chain heads as evidence (issue 13, finding 16): the controller keeps the signed head of
//! every batch as a CHAIN_HEAD record, sinks export it, and a verifier checks the events against
//! it — so an edited and re-hashed SIEM file or database row no longer verifies.

mod common;

use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use common::TestController;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use thoth_client::evidence::{StoredVerdict, verify_stored};
use thoth_client::{self as client, Enrolled};
use thoth_controller::pki::{Ca, Identity};
use thoth_proto::evidence::{SignedHead, TrustAnchors, head_message};
use thoth_proto::fleet::{self as pb, event_upload_client::EventUploadClient};
use thoth_proto::{Chain, Verdict, verify_evidence, verify_lines};

fn sign(key_pem: &str, msg: &[u8]) -> Vec<u8> {
    let PrivateKeyDer::Pkcs8(der) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap()
    else {
        panic!("agent keys are PKCS#8")
    };
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der()).unwrap();
    key.sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// Three chained tool-call events of `agent`, uploaded as one signed batch; returns their lines.
async fn upload_three(t: &TestController, agent: &Enrolled) -> Vec<Vec<u8>> {
    let mut chain = Chain::new();
    let lines: Vec<Vec<u8>> = (1..=3)
        .map(|n| {
            let mut m = json!({
                "eventId": uuid::Uuid::now_v7().to_string(),
                "eventType": "TOOL_CALL_PRE",
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "tenantId": agent.tenant,
                "agentId": agent.agent_id,
                "hostname": "test-host",
                "user": "alice",
                "sourceType": "agent_tool_call",
                "toolName": format!("tool {n}"),
            })
            .as_object()
            .unwrap()
            .clone();
            chain.seal_value(&mut m)
        })
        .collect();
    let batch = pb::EventBatch {
        events: lines.clone(),
        head: Some(pb::ChainHead {
            seq: chain.seq(),
            hash: chain.head_hex(),
            signature: sign(
                agent.credentials.key_pem.as_deref().unwrap(),
                &head_message(&agent.agent_id, chain.seq(), &chain.head_hex()),
            ),
        }),
    };
    let ch = client::connect(&t.url, &agent.credentials, None)
        .await
        .unwrap();
    let mut acks = EventUploadClient::new(ch)
        .upload(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().expect("an ack");
    assert_eq!(ack.acked_seq, 3);
    lines
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_of(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect()
}

fn is_head(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line).unwrap()["eventType"] == "CHAIN_HEAD"
}

/// What an attacker who can write the file does: edit an event, then re-hash every chain event
/// so the links hold again (controller records are left as they are).
fn edit_and_rehash(
    lines: &[Vec<u8>],
    edit: impl Fn(&mut serde_json::Map<String, Value>),
) -> Vec<Vec<u8>> {
    let mut chain = Chain::new();
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            if v.get("hash").is_none() {
                return l.clone();
            }
            let mut m = v.as_object().unwrap().clone();
            edit(&mut m);
            chain.seal_value(&mut m)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_siem_file_edited_and_rehashed_does_not_verify() {
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("events.jsonl");
    let sink_cfg: thoth_controller::sinks::SinkConfig = toml::from_str(&format!(
        "name = \"file\"\nkind = \"jsonl\"\npath = {:?}\n",
        sink.display().to_string()
    ))
    .unwrap();
    let t = TestController::start_with(move |c| c.sinks.push(sink_cfg)).await;
    let agent = t.enroll("acme").await;
    upload_three(&t, &agent).await;
    let ca = TrustAnchors::from_pem(t.ca_pem().as_bytes()).unwrap();
    let s = sink.clone();
    wait_for("the sink file to hold the batch and its head", move || {
        std::fs::read(&s).is_ok_and(|d| lines_of(&d).iter().any(|l| is_head(l)))
    });
    let data = std::fs::read(&sink).unwrap();
    let lines = lines_of(&data);
    assert_eq!(lines.len(), 4, "3 events and 1 CHAIN_HEAD");

    // As exported: every event is covered by the agent's signed head from the fleet's CA.
    let r = verify_evidence(&data[..], Some(&ca)).unwrap();
    assert_eq!(r.verdict(), Verdict::Ok, "{r:?}");
    assert_eq!((r.events, r.heads, r.unsigned), (3, 1, 0));
    // Without the CA it is signed, but not proven to be the fleet's.
    assert_eq!(
        verify_lines(&data[..]).unwrap().verdict(),
        Verdict::SignedUnanchored
    );

    // Edit one event and re-hash the chain: the links hold, the signed head does not.
    let forged = edit_and_rehash(&lines, |m| {
        if m["seq"] == 2 {
            m.insert("toolName".into(), "innocent".into());
        }
    });
    for ca in [Some(&ca), None] {
        let e = verify_evidence(&join(&forged)[..], ca).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("re-hashed"), "{e}");
    }

    // ... and with its CHAIN_HEAD lines removed, nothing is proven any more.
    let stripped: Vec<Vec<u8>> = forged.iter().filter(|l| !is_head(l)).cloned().collect();
    let r = verify_evidence(&join(&stripped)[..], Some(&ca)).unwrap();
    assert_eq!(r.verdict(), Verdict::Unsigned);
    assert_eq!(r.unsigned, 3);
    assert!(
        r.describe("f")[0].starts_with("UNSIGNED"),
        "{:?}",
        r.describe("f")
    );

    // ... and re-signed with a certificate from another CA naming the same agent: not the fleet's.
    let rogue = Ca::generate("rogue", SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let cert = rogue
        .issue_client(
            &Identity::Agent {
                tenant: agent.tenant.clone(),
                agent_id: agent.agent_id.clone(),
            },
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
    let last: Value = serde_json::from_slice(stripped.last().unwrap()).unwrap();
    let hash = last["hash"].as_str().unwrap().to_owned();
    let head = SignedHead {
        tenant_id: agent.tenant.clone(),
        agent_id: agent.agent_id.clone(),
        seq: 3,
        signature: sign(&cert.key_pem, &head_message(&agent.agent_id, 3, &hash)),
        hash,
        certificate: thoth_controller::pki::cert_pem_to_der(&cert.cert_pem).unwrap(),
        timestamp: humantime::format_rfc3339(SystemTime::now()).to_string(),
    };
    let mut resigned = stripped.clone();
    resigned.push(head.to_record("forged").to_string().into_bytes());
    let e = verify_evidence(&join(&resigned)[..], Some(&ca)).unwrap_err();
    assert!(e.reason.contains("does not chain to the given CA"), "{e}");
    // (Without the CA such a file is "signed, CA not checked", never OK.)
    assert_eq!(
        verify_lines(&join(&resigned)[..]).unwrap().verdict(),
        Verdict::SignedUnanchored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_database_row_fails_thothctl_events_verify() {
    let t = TestController::start().await;
    let agent = t.enroll("acme").await;
    upload_three(&t, &agent).await;
    let ca = TrustAnchors::from_pem(t.ca_pem().as_bytes()).unwrap();
    let mut admin = t.admin().await;
    match verify_stored(&mut admin, "acme", "", &ca).await.unwrap() {
        StoredVerdict::Intact(r) => {
            assert_eq!(r.verdict(), Verdict::Ok, "{r:?}");
            assert_eq!((r.events, r.heads), (3, 1));
        }
        StoredVerdict::Broken { reason, .. } => panic!("{reason}"),
    }

    // Someone with the database edits a row (its stored chain_ok flag still says 1).
    let db = rusqlite::Connection::open(t.data().join("controller.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = db
        .execute(
            "UPDATE events SET json = replace(json, '\"tool 2\"', '\"innocent\"') WHERE json LIKE '%\"tool 2\"%'",
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    match verify_stored(&mut admin, "acme", &agent.agent_id, &ca)
        .await
        .unwrap()
    {
        StoredVerdict::Broken { reason, .. } => {
            assert!(reason.contains("altered"), "{reason}")
        }
        StoredVerdict::Intact(r) => panic!("an edited row verified: {r:?}"),
    }
}
