"""Tiny MCP "notes" server for end-to-end tests (Python `mcp` SDK 2.x).

Built with the SDK's high-level `MCPServer` and served over stdio. The SDK's
stdio loop is dual-era: a connection whose first request is `initialize` is
served with the legacy (2025-11-25) handshake lifecycle, and a connection whose
first request carries the 2026-07-28 `_meta` envelope
(`io.modelcontextprotocol/protocolVersion` ...), e.g. `server/discover`, is
served with the modern no-initialize lifecycle.

Usage: python modern_server.py [--with-elicit]

Tools: echo(text), write_note(path, text), read_note(path).
With --with-elicit (or NOTES_WITH_ELICIT=1) a fourth tool `confirm(question)` is
registered: it asks the client via elicitation (legacy: an `elicitation/create`
request mid-call; 2026-07-28: an `InputRequiredResult` the client answers by
retrying the call) and returns "accept", "decline" or "cancel".
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel

mcp = MCPServer("notes", log_level="WARNING")


@mcp.tool()
def echo(text: str) -> str:
    """Return the given text unchanged."""
    return text


@mcp.tool()
def write_note(path: str, text: str) -> str:
    """Write text to the file at path."""
    data = text.encode("utf-8")
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ToolError(f"cannot write {path}: {exc.strerror}") from exc
    return f"wrote {len(data)} bytes"


@mcp.tool()
def read_note(path: str) -> str:
    """Return the content of the file at path."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror}") from exc


class Answer(BaseModel):
    note: str | None = None


def _ask(question: str) -> Elicit[Answer]:
    return Elicit(question, Answer)


def confirm(question: str, answer: Annotated[ElicitationResult[Answer], Resolve(_ask)]) -> str:
    """Ask the user a question through elicitation; returns the action taken."""
    return answer.action


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if "--with-elicit" in sys.argv[1:] or os.environ.get("NOTES_WITH_ELICIT") == "1":
        mcp.tool()(confirm)
    mcp.run("stdio")
