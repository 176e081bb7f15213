"""A minimal MCP stdio server (standard library only) for byte-exact tests.

Usage: recorder_server.py RECORD_FILE [EXIT_CODE]

Appends every line it receives, byte for byte, to RECORD_FILE. Answers:
  initialize            -> a result (after first writing a notification: messages before the reply)
  tools/list            -> tools "alpha", "beta", "gamma"
  tools/call            -> text "called NAME" ("echo": its argument "text"); tool "crash" exits at once (status 3) without
                           answering; tool "garbage" first writes a non-JSON line and a JSON array
  anything else         -> JSON-RPC error -32601
On end of input it exits with EXIT_CODE (default 0).
"""
import json
import sys


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    record = open(sys.argv[1], "ab", buffering=0)
    code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            sys.exit(code)
        record.write(line)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "id" not in msg or "method" not in msg:
            continue
        mid, method = msg["id"], msg["method"]
        if method == "initialize":
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "info", "data": "before the initialize reply"}})
            send({"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [
                {"name": n, "inputSchema": {"type": "object"}} for n in ("alpha", "beta", "gamma")]}})
        elif method == "tools/call":
            name = msg.get("params", {}).get("name")
            if name == "crash":
                sys.stderr.write("recorder: crashing as asked\n")
                sys.stderr.flush()
                import os
                os._exit(3)
            if name == "garbage":
                sys.stdout.write("this is not JSON\n[1,2,3]\n")
                sys.stdout.flush()
            text = "called " + str(name)
            if name == "echo":
                text = msg["params"].get("arguments", {}).get("text", "")
            send({"jsonrpc": "2.0", "id": mid, "result": {
                "content": [{"type": "text", "text": text}], "isError": False}})
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
