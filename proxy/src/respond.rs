//! Messages the proxy itself writes to the client: denials, errors, approval requests.

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::events::Decided;

/// Why a call that needed approval did not get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoApproval {
    /// No channel could ask a human.
    Unreachable,
    /// The human declined or cancelled.
    Declined,
    /// Nobody answered in time.
    TimedOut(u64),
}

fn id_value(id: Option<&RawValue>) -> Value {
    id.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

fn line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("serializing a JSON value into memory");
    out.push(b'\n');
    out
}

/// A JSON-RPC error response.
pub fn error(id: Option<&RawValue>, code: i64, message: &str) -> Vec<u8> {
    line(
        &json!({"jsonrpc": "2.0", "id": id_value(id), "error": {"code": code, "message": message}}),
    )
}

/// The text the model reads when a call is not forwarded. It names the tool, the server, the
/// rule and the policy version, and says what to do next.
pub fn denial_text(tool: &str, server: &str, d: &Decided, why: Option<NoApproval>) -> String {
    let dec = &d.decision;
    let head = match why {
        None => format!(
            "Blocked by Thoth policy: the tool \"{tool}\" on MCP server \"{server}\" is not allowed."
        ),
        Some(NoApproval::Unreachable) => format!(
            "Blocked by Thoth policy: the tool \"{tool}\" on MCP server \"{server}\" requires human \
             approval, and no approver was reachable (this client cannot show approval prompts), so \
             the call was denied."
        ),
        Some(NoApproval::Declined) => format!(
            "Blocked by Thoth policy: the tool \"{tool}\" on MCP server \"{server}\" requires human \
             approval, and the user declined."
        ),
        Some(NoApproval::TimedOut(secs)) => format!(
            "Blocked by Thoth policy: the tool \"{tool}\" on MCP server \"{server}\" requires human \
             approval, and none was given within {secs} s, so the call was denied."
        ),
    };
    format!(
        "{head} Reason: {}. Rule: {} (mode {}, policy version {}). The call was not sent to the \
         server. Do not retry it unchanged; tell the user it was stopped by their organization's \
         policy and that an administrator can change the policy if the access is needed.",
        dec.reason,
        dec.rule,
        dec.mode.as_str(),
        d.policy_version
    )
}

/// The text of a denial whose middle part the approver wrote (`middle` follows "the tool … on
/// MCP server …"). `pending`: an approval is still open, and the identical call goes through
/// when retried once it is approved.
pub fn held_denial_text(
    tool: &str,
    server: &str,
    d: &Decided,
    middle: &str,
    pending: bool,
) -> String {
    let dec = &d.decision;
    let tail = if pending {
        "Tell the user that approval is pending, and retry the identical call once it is approved."
    } else {
        "Do not retry it unchanged; tell the user it was stopped by their organization's policy \
         and that an administrator can change the policy if the access is needed."
    };
    format!(
        "Blocked by Thoth policy: the tool \"{tool}\" on MCP server \"{server}\" {middle} Reason: \
         {}. Rule: {} (mode {}, policy version {}). {tail}",
        dec.reason,
        dec.rule,
        dec.mode.as_str(),
        d.policy_version
    )
}

/// A `tools/call` result that reports a denial: `isError: true`, the explanation as text, and the
/// decision under `_meta["thoth/decision"]`.
///
/// `modern` marks a call made in the 2026-07-28 lifecycle, whose results carry `resultType`.
pub fn denial(
    id: &RawValue,
    tool: &str,
    server: &str,
    d: &Decided,
    why: Option<NoApproval>,
    modern: bool,
) -> Vec<u8> {
    denial_with_text(
        id,
        tool,
        server,
        d,
        denial_text(tool, server, d, why),
        modern,
    )
}

/// [`denial`] with its text written by the caller.
pub fn denial_with_text(
    id: &RawValue,
    tool: &str,
    server: &str,
    d: &Decided,
    text: String,
    modern: bool,
) -> Vec<u8> {
    let mut msg = json!({
        "jsonrpc": "2.0",
        "id": id_value(Some(id)),
        "result": {
            "content": [{"type": "text", "text": text}],
            "isError": true,
            "_meta": {"thoth/decision": {
                "action": d.action,
                "mode": d.decision.mode.as_str(),
                "rule": d.decision.rule,
                "reason": d.decision.reason,
                "policyVersion": d.policy_version,
                "server": server,
                "tool": tool,
            }}
        }
    });
    if modern {
        msg["result"]["resultType"] = Value::String("complete".into());
    }
    line(&msg)
}

/// Whether a request's params carry the 2026-07-28 `_meta` envelope.
pub fn is_modern(params: Option<&RawValue>) -> bool {
    params.is_some_and(|p| p.get().contains("io.modelcontextprotocol/protocolVersion"))
}

/// An `elicitation/create` request asking the user to approve a call.
pub fn approval_request(
    approval_id: &str,
    tool: &str,
    server: &str,
    arguments_preview: &str,
    d: &Decided,
    timeout_secs: u64,
) -> Vec<u8> {
    let message = approval_message(tool, server, arguments_preview, d, timeout_secs);
    line(&json!({
        "jsonrpc": "2.0",
        "id": approval_id,
        "method": "elicitation/create",
        "params": elicitation_params(message, false),
    }))
}

/// `elicitation/create` params asking to accept or decline, with nothing to fill in.
/// `mode` is sent only where the revision has it (2025-11-25 and later).
fn elicitation_params(message: String, with_mode: bool) -> Value {
    let mut params =
        json!({"message": message, "requestedSchema": {"type": "object", "properties": {}}});
    if with_mode {
        params["mode"] = Value::String("form".into());
    }
    params
}

/// The key of the proxy's own entry in `inputRequests` / `inputResponses`.
pub const INPUT_KEY: &str = "thoth/approval";

/// A 2026-07-28 `input_required` result asking the client to obtain the user's approval and
/// re-send the call with `requestState`.
pub fn input_required(
    id: &RawValue,
    state: &str,
    tool: &str,
    server: &str,
    arguments_preview: &str,
    d: &Decided,
    timeout_secs: u64,
) -> Vec<u8> {
    let message = approval_message(tool, server, arguments_preview, d, timeout_secs);
    line(&json!({
        "jsonrpc": "2.0",
        "id": id_value(Some(id)),
        "result": {
            "resultType": "input_required",
            "inputRequests": {INPUT_KEY: {
                "method": "elicitation/create",
                "params": elicitation_params(message, true),
            }},
            "requestState": state,
        }
    }))
}

fn approval_message(
    tool: &str,
    server: &str,
    arguments_preview: &str,
    d: &Decided,
    timeout_secs: u64,
) -> String {
    format!(
        "Your organization's policy requires approval before the assistant uses the tool \
         \"{tool}\" on \"{server}\" ({}). Arguments: {arguments_preview}. Accept to allow this one \
         call; decline to block it. Without an answer within {timeout_secs} s it is blocked.",
        d.decision.reason
    )
}

/// A `notifications/cancelled` for one of the proxy's own requests.
pub fn cancelled(request_id: &str, reason: &str) -> Vec<u8> {
    line(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": request_id, "reason": reason}
    }))
}
