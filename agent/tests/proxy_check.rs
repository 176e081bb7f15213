//! The agent checks a proxy from outside before it serves it policy (review finding M6): a
//! preloaded library that removes `LD_PRELOAD` from the proxy's own environment in its
//! constructor gets past `thoth run`'s own refusal, but not past the agent, which reads the
//! process's original environment block and its memory map in `/proc`.
//!
//! These run a real agent endpoint (in process, with a signed policy allowing every call) and
//! the real `thoth` binary as the proxy, with `cat` as the MCP server: a forwarded call comes
//! back as its own echo, a denied one as the proxy's error result. The preloaded library is
//! built here with the system C compiler.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use ed25519_dalek::SigningKey;
use serde_json::Value;
use thoth_agent::daemon::{Shared, local};
use thoth_endpoint::config::AgentConfig;
use thoth_endpoint::state::Trust;
use thoth_proto::bundle::{BundlePayload, certify, sign_bundle};

#[path = "../../proxy/tests/common/mod.rs"]
mod common;

/// Runs `thoth run --server s` against the agent in `dir` with `env`, sends one call; returns
/// (the first line back, the proxy's log).
fn one_call(dir: &Path, env: &[(&str, &Path)]) -> (Value, String) {
    let (socket, state) = (dir.join("agent.sock"), dir.join("state"));
    let args = [
        std::ffi::OsStr::new("--agent-socket"),
        socket.as_os_str(),
        std::ffi::OsStr::new("--state-dir"),
        state.as_os_str(),
    ];
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    common::one_call(dir, &args, &env)
}
const ALLOW_ALL: &str =
    "servers:\n  - name: s\n    enforcement: block\n    approved_scope: [\"*\"]\n";

/// A constructor that hides `LD_PRELOAD` from the process's own environment (`unsetenv`), and
/// with `SCRUB` also overwrites it in the original environment block.
const HIDING_LIBRARY: &str = r#"
#include <stdlib.h>
#include <string.h>
__attribute__((constructor)) static void hide(void) {
    char *value = getenv("LD_PRELOAD");
    if (!value) return;
    char *entry = value - strlen("LD_PRELOAD=");
    size_t n = strlen(entry);
    unsetenv("LD_PRELOAD");
#ifdef SCRUB
    memset(entry, 'X', n);
#else
    (void)n;
#endif
}
"#;

fn root_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn trust() -> Trust {
    Trust {
        tenant: "acme".into(),
        root_public_key: base64::engine::general_purpose::STANDARD
            .encode(root_key().verifying_key().to_bytes()),
    }
}

/// A policy bundle allowing every call of server `s`, signed under the test root.
fn bundle() -> Vec<u8> {
    let key = SigningKey::from_bytes(&[2; 32]);
    let now = SystemTime::now();
    let cert = certify(
        &root_key(),
        "k",
        &key.verifying_key(),
        now - Duration::from_secs(60),
        Duration::from_secs(86_400),
    );
    let p = BundlePayload {
        tenant: "acme".into(),
        version: 1,
        issued_at: humantime::format_rfc3339_seconds(now).to_string(),
        expires_at: humantime::format_rfc3339_seconds(now + Duration::from_secs(3600)).to_string(),
        policy: ALLOW_ALL.into(),
    };
    serde_json::to_vec(&sign_bundle(&p, &key, &cert)).unwrap()
}

/// An agent over `dir` whose installed thoth is the one built with these tests, enforcing
/// [`ALLOW_ALL`].
fn agent(dir: &Path) -> Arc<Shared> {
    let text = format!(
        "controller_url = \"https://127.0.0.1:9\"\ntenant = \"acme\"\nca_fingerprint = \"sha256:{}\"\nroot_public_key = \"{}\"\nstate_dir = \"{}\"\nsocket_path = \"{}\"\nthoth_path = \"{}\"\nwrap_configs = false\n",
        "ab".repeat(32),
        trust().root_public_key,
        dir.join("state").display(),
        dir.join("agent.sock").display(),
        common::thoth().display(),
    );
    let config: AgentConfig = toml::from_str(&text).unwrap();
    let sh = Shared::new(config).unwrap();
    sh.state.create().unwrap();
    sh.state.write_trust(&trust()).unwrap();
    sh.apply(&bundle());
    assert_eq!(sh.status().policy.map(|p| p.version), Some(1));
    sh
}

/// Builds the hiding library into a directory every user can write (as a user's own would be).
fn hiding_library(dir: &Path, scrub: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let libs = dir.join(if scrub { "scrub" } else { "hide" });
    std::fs::create_dir_all(&libs).unwrap();
    std::fs::set_permissions(&libs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = libs.join("hide.c");
    std::fs::write(&src, HIDING_LIBRARY).unwrap();
    let lib = libs.join("libhide.so");
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src);
    if scrub {
        cc.arg("-DSCRUB");
    }
    let out = cc
        .output()
        .expect("a C compiler (cc) builds the test library");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

fn forwarded(answer: &Value) -> bool {
    answer.get("method").is_some()
}

fn denial_text(answer: &Value) -> String {
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The details of the PROXY_TAMPERED events the agent noted.
fn tampered(sh: &Shared) -> Vec<String> {
    sh.status()
        .recent_events
        .iter()
        .filter(|n| n.event_type == "PROXY_TAMPERED")
        .map(|n| n.detail.clone())
        .collect()
}

/// Runs `f` with an agent endpoint serving `sh` on its socket.
fn with_agent(sh: &Arc<Shared>, f: impl FnOnce()) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(local::serve(Arc::clone(sh))).unwrap();
    f();
    rt.block_on(server.stop());
}

#[test]
fn a_preloaded_library_that_hides_itself_gets_no_policy_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let sh = agent(dir.path());
    let lib = hiding_library(dir.path(), false);
    with_agent(&sh, || {
        // The installed thoth, untouched: served, the call goes through.
        let (answer, err) = one_call(dir.path(), &[]);
        assert!(forwarded(&answer), "{answer}\n{err}");
        assert!(tampered(&sh).is_empty(), "{:?}", tampered(&sh));

        // Preloaded with a library that unsets LD_PRELOAD in its constructor: the proxy's own
        // check sees nothing, the agent still finds it in the original environment block.
        let (answer, err) = one_call(dir.path(), &[("LD_PRELOAD", &lib)]);
        assert!(
            !err.contains("refuses to govern"),
            "the library hid itself from the proxy's own check: {err}"
        );
        assert!(
            !forwarded(&answer),
            "the call went through: {answer}\n{err}"
        );
        let text = denial_text(&answer);
        assert!(
            text.contains("does not serve policy") && text.contains("LD_PRELOAD"),
            "{text}"
        );
        let events = tampered(&sh);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains("LD_PRELOAD"), "{events:?}");

        // Reported once per user and kind in a period; refused every time.
        let (answer, _) = one_call(dir.path(), &[("LD_PRELOAD", &lib)]);
        assert!(!forwarded(&answer), "{answer}");
        assert_eq!(tampered(&sh).len(), 1, "{:?}", tampered(&sh));
    });
}

#[test]
fn a_library_that_also_wipes_its_environment_entry_is_found_in_the_memory_map() {
    let dir = tempfile::tempdir().unwrap();
    let sh = agent(dir.path());
    let lib = hiding_library(dir.path(), true);
    with_agent(&sh, || {
        let (answer, err) = one_call(dir.path(), &[("LD_PRELOAD", &lib)]);
        assert!(
            !forwarded(&answer),
            "the call went through: {answer}\n{err}"
        );
        let text = denial_text(&answer);
        assert!(
            !text.contains("LD_PRELOAD") && text.contains(&lib.display().to_string()),
            "the library is named from the memory map, not the (wiped) environment: {text}"
        );
        let events = tampered(&sh);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0].contains(&lib.display().to_string()), "{events:?}");
    });
}
