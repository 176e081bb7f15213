//! `LocalAgent.CheckTools`: the agent compares a server's tool list with the definitions it
//! pinned for this OS user. Asked from the thread that reads the server, with a short timeout:
//! when the agent cannot answer, the session's own book decides.

use std::path::Path;
use std::time::Duration;

use thoth_proto::fleet::{ToolDefinition, ToolListCheck, ToolListVerdict};

use super::verdict::Observed;

/// How long the agent has to answer.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest string kept from the agent's answer.
const MAX_FIELD: usize = 256;
/// Most `changes` kept per tool.
const MAX_CHANGES: usize = 8;

/// The request for these tools.
pub(crate) fn request(
    server_name: &str,
    client: &str,
    command: &[String],
    tools: &[&Observed],
    session_id: &str,
    complete: bool,
) -> ToolListCheck {
    ToolListCheck {
        server_name: server_name.to_owned(),
        client: client.to_owned(),
        command: command.to_vec(),
        tools: tools
            .iter()
            .map(|o| ToolDefinition {
                name: o.digest.name.clone(),
                digest: o.digest.digest.clone(),
                description_sha256: o.digest.description.clone(),
                schema_sha256: o.digest.schema.clone(),
                annotations_sha256: o.digest.annotations.clone(),
                description: o.description.clone(),
            })
            .collect(),
        session_id: session_id.to_owned(),
        complete,
    }
}

/// Asks the agent at `socket` (blocking this thread at most [`CHECK_TIMEOUT`]).
pub(crate) fn ask(socket: &Path, req: ToolListCheck) -> Result<ToolListVerdict, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut verdict = rt.block_on(async {
        let ch = thoth_endpoint::tls::local_channel(socket).map_err(|e| e.to_string())?;
        let mut client = thoth_proto::fleet::local_agent_client::LocalAgentClient::new(ch);
        match tokio::time::timeout(CHECK_TIMEOUT, client.check_tools(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("the agent refused: {}", s.message())),
            Err(_) => Err("the agent did not answer in time".to_owned()),
        }
    })?;
    bound(&mut verdict);
    Ok(verdict)
}

fn cut(s: &mut String) {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// Caps what the agent's answer may hold.
fn bound(v: &mut ToolListVerdict) {
    cut(&mut v.server_key);
    v.tools.truncate(super::verdict::MAX_TOOLS);
    v.removed.truncate(super::verdict::MAX_TOOLS);
    for t in &mut v.tools {
        cut(&mut t.name);
        cut(&mut t.state);
        cut(&mut t.pinned_digest);
        cut(&mut t.pin_source);
        t.changes.truncate(MAX_CHANGES);
        t.changes.iter_mut().for_each(cut);
    }
    v.removed.iter_mut().for_each(cut);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::verdict::{MAX_DESCRIPTION, observe};
    use serde_json::json;

    #[test]
    fn the_request_carries_the_description_cut_on_a_char_boundary() {
        // "é" is 2 bytes, "€" 3: the cut falls inside a character for every offset.
        for (pad, ch) in [
            (MAX_DESCRIPTION - 1, "é"),
            (MAX_DESCRIPTION - 2, "€"),
            (0, "€"),
        ] {
            let description = format!("{}{}", "a".repeat(pad), ch.repeat(2000));
            let short = observe(&json!({"name": "t", "description": "short é"})).unwrap();
            let long = observe(&json!({"name": "u", "description": description})).unwrap();
            let req = request(
                "files",
                "cli",
                &["npx".into()],
                &[&short, &long],
                "s1",
                true,
            );
            assert_eq!(req.tools[0].description, "short é");
            let got = &req.tools[1].description;
            assert!(got.len() <= MAX_DESCRIPTION, "{} bytes", got.len());
            assert!(
                got.len() > MAX_DESCRIPTION - ch.len(),
                "{} bytes",
                got.len()
            );
            // Cut on a char boundary, and marked as cut.
            let (kept, marker) = got.rsplit_once(" …[cut: ").expect("a cut marker");
            assert!(description.starts_with(kept));
            assert_eq!(marker, format!("{} bytes in all]", description.len()));
            assert_eq!(req.tools[1].name, "u");
            assert_eq!(req.tools[1].digest, long.digest.digest);
        }
        // No description (or not a string): empty.
        let none = observe(&json!({"name": "v", "description": 7})).unwrap();
        let req = request("files", "", &[], &[&none], "s", false);
        assert_eq!(req.tools[0].description, "");
    }
}
