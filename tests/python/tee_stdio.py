"""Transparent stdio tee for MCP servers: logs every JSON-RPC line in both directions.

Usage: python tee_stdio.py LOGFILE -- CMD [ARGS...]

Runs CMD ARGS..., forwards our stdin to its stdin and its stdout to our stdout
unchanged, and appends each line to LOGFILE prefixed with ">> " (client -> server)
or "<< " (server -> client). The child's stderr is inherited.
"""

from __future__ import annotations

import subprocess
import sys
import threading


def main() -> int:
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    log_path, cmd = argv[0], argv[2:]
    log = open(log_path, "a", encoding="utf-8", buffering=1)
    lock = threading.Lock()
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def record(prefix: str, line: bytes) -> None:
        with lock:
            log.write(prefix + line.decode("utf-8", "replace").rstrip("\n") + "\n")

    def pump_in() -> None:
        assert child.stdin is not None
        try:
            for line in sys.stdin.buffer:
                record(">> ", line)
                child.stdin.write(line)
                child.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        finally:
            try:
                child.stdin.close()
            except OSError:
                pass

    def pump_out() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            record("<< ", line)
            try:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
            except (BrokenPipeError, OSError):
                break

    threading.Thread(target=pump_in, daemon=True).start()
    out = threading.Thread(target=pump_out)
    out.start()
    rc = child.wait()
    out.join()
    return rc


if __name__ == "__main__":
    sys.exit(main())
