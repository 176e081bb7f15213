"""Scriptable MCP stdio client for end-to-end tests (Python `mcp` SDK 2.x).

Usage:
    python mcp_client.py [--lifecycle initialize|discover|auto] [--elicit none|accept|decline]
                         [--timeout SECS] --ops JSON -- CMD [ARGS...]

Spawns CMD ARGS... as an MCP stdio server (with the full current environment),
connects a `ClientSession`, performs the chosen lifecycle and runs the ops:

    {"op": "list_tools"}
    {"op": "call", "tool": NAME, "args": {...}}
    {"op": "wait_file", "path": P, "timeout": SECS}   # waits (same session) until P exists

One JSON line per op is printed on stdout:

    {"op": "list_tools", "tools": [names...], "descriptions": {name: description|null}}
    {"op": "call", "tool": NAME, "isError": bool, "text": "...", "meta": {...}|null, "structured": ...|null}
    {"op": "call", "tool": NAME, "error": "message", "code": int|null}      # the call raised
    (plus "data": <JSON-RPC error.data> when the error carried data; a failed list_tools
    prints {"op": "list_tools", "error": ..., "code": ...} the same way)

and, whenever the server asks for input, a line

    {"op": "elicitation", "message": "..."}

Lifecycles:
    initialize  legacy handshake: `initialize` request + `notifications/initialized`.
    discover    2026-07-28: a `server/discover` probe, then every request carries the
                `_meta` envelope (protocolVersion / clientInfo / clientCapabilities).
                Fails (exit 1, "Method not found (code=-32601)") against legacy-only servers.
    auto        SDK policy: try `server/discover`, fall back to `initialize` on any error.

Elicitation: with --elicit accept|decline an elicitation callback is registered, which
makes the SDK declare the `elicitation` capability (legacy: `capabilities.elicitation`
in `initialize`; modern: `_meta["io.modelcontextprotocol/clientCapabilities"].elicitation`
on every request). Legacy servers send `elicitation/create` requests; modern servers
answer `tools/call` with an `InputRequiredResult` (resultType "input_required") which
this client resolves through the same callback and retries (SEP-2322 driver).

Tool results are not checked against the tool's outputSchema (the SDK's
`validate_tool_result` is disabled), and `_meta` is reported as received.

Exit status: 0 when the session ran all ops (even if some calls errored); 2 for bad
usage; 1 (with a message on stderr) if spawning/connecting/the lifecycle failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.client._input_required import run_input_required_driver
from mcp.client._probe import negotiate_auto
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

CLIENT_INFO = types.Implementation(name="thoth-e2e-client", version="0.1.0")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class E2EClientSession(ClientSession):
    """ClientSession that never rejects a tool result because of its outputSchema."""

    async def validate_tool_result(self, name: str, result: types.CallToolResult) -> None:  # noqa: ARG002
        return None


def make_elicitation_callback(action: str):
    async def on_elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        emit({"op": "elicitation", "message": params.message})
        if action == "accept":
            return types.ElicitResult(action="accept", content={})
        return types.ElicitResult(action="decline")

    return on_elicit


def error_fields(exc: BaseException) -> tuple[str, int | None, Any]:
    """(message, JSON-RPC code or None, JSON-RPC error data or None) for a failed request."""
    # ExceptionGroups from task groups: report the first leaf.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.message, exc.code, exc.data
    msg = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {msg}", None, None


def error_line(op: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
    message, code, data = error_fields(exc)
    line: dict[str, Any] = {"op": op, **extra, "error": message, "code": code}
    if data is not None:
        line["data"] = data  # JSON-RPC error.data, only when the peer sent one
    return line


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


async def call_tool(session: ClientSession, name: str, args: dict[str, Any] | None) -> types.CallToolResult:
    """tools/call, resolving 2026-07-28 InputRequiredResult rounds via the session's callbacks."""

    async def retry(responses: types.InputResponses | None, state: str | None):
        return await session.call_tool(
            name, args, input_responses=responses, request_state=state, allow_input_required=True
        )

    first = await retry(None, None)
    if not isinstance(first, types.InputRequiredResult):
        return first

    async def dispatch(key: str, req: types.InputRequest):
        ctx = ClientRequestContext(session=session, request_id=key, meta=req.params.meta if req.params else None)
        return await session.dispatch_input_request(ctx, req)

    return await run_input_required_driver(first, dispatch=dispatch, retry=retry)


async def run_op(session: ClientSession, op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind == "list_tools":
        names: list[str] = []
        descriptions: dict[str, str | None] = {}
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            res = await session.list_tools(params=params)
            names.extend(t.name for t in res.tools)
            descriptions.update((t.name, t.description) for t in res.tools)
            cursor = res.next_cursor
            if not cursor:
                break
        emit({"op": "list_tools", "tools": names, "descriptions": descriptions})
    elif kind == "call":
        name = op["tool"]
        try:
            result = await call_tool(session, name, op.get("args"))
        except Exception as exc:  # JSON-RPC error, timeout, invalid result, ...
            emit(error_line("call", exc, tool=name))
            return
        emit(
            {
                "op": "call",
                "tool": name,
                "isError": bool(result.is_error),
                "text": text_of(result),
                "meta": result.meta,
                "structured": result.structured_content,
            }
        )
    elif kind == "wait_file":
        # The test's cue between two calls of one session (e.g. "approved now: retry").
        deadline = anyio.current_time() + float(op.get("timeout", 30))
        while not os.path.exists(op["path"]) and anyio.current_time() < deadline:
            await anyio.sleep(0.05)
        emit({"op": "wait_file", "ok": os.path.exists(op["path"])})
    else:
        raise ValueError(f"unknown op: {op!r}")


async def run(ns: argparse.Namespace, ops: list[dict[str, Any]], command: list[str]) -> int:
    server = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    elicitation_callback = make_elicitation_callback(ns.elicit) if ns.elicit != "none" else None
    connected = False
    try:
        async with stdio_client(server) as (read_stream, write_stream):
            async with E2EClientSession(
                read_stream,
                write_stream,
                read_timeout_seconds=ns.timeout,
                elicitation_callback=elicitation_callback,
                client_info=CLIENT_INFO,
            ) as session:
                with anyio.fail_after(ns.timeout):
                    if ns.lifecycle == "discover":
                        await session.discover()
                    elif ns.lifecycle == "auto":
                        await negotiate_auto(session)
                    else:
                        await session.initialize()
                connected = True
                for op in ops:
                    if op.get("op") == "list_tools":
                        try:
                            await run_op(session, op)
                        except Exception as exc:
                            emit(error_line("list_tools", exc))
                    else:
                        await run_op(session, op)
    except Exception as exc:
        message, code, _ = error_fields(exc)
        stage = "session" if connected else "connect"
        print(f"mcp_client: {stage} failed: {message} (code={code})", file=sys.stderr)
        if os.environ.get("MCP_CLIENT_DEBUG"):
            traceback.print_exception(exc)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1 :]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(prog="mcp_client.py", usage=__doc__.split("\n\n")[1].strip().removeprefix("Usage:").strip())
    parser.add_argument("--lifecycle", choices=["initialize", "discover", "auto"], default="initialize")
    parser.add_argument("--elicit", choices=["none", "accept", "decline"], default="none")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    parser.add_argument("--ops", required=True, help="JSON array of operations")
    ns = parser.parse_args(own)
    if not command:
        parser.error("missing server command after --")
    try:
        ops = json.loads(ns.ops)
        if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
            raise ValueError("--ops must be a JSON array of objects")
        for o in ops:
            if o.get("op") not in ("list_tools", "call", "wait_file") or (o["op"] == "call" and not isinstance(o.get("tool"), str)):
                raise ValueError(f"bad op: {o!r}")
    except ValueError as exc:
        parser.error(str(exc))
    return anyio.run(run, ns, ops, command)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    sys.exit(main(sys.argv[1:]))
