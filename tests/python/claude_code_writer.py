"""Rewrites ~/.claude.json the way Claude Code saves its config, as fast as asked.

Each save: take the lock directory `<file>.lock` (proper-lockfile's protocol: mkdir, retry while
it exists), re-read the file, apply a change (count a startup, append to a history list, and once
add a new MCP server), write `<file>.tmp.<pid>.<ms>` with the file's mode, rename it over the
file, release the lock. Prints one JSON line at the end: {"writes": N, "lock_waits": W}.

Usage: claude_code_writer.py FILE SECONDS INTERVAL_MS [ADD_SERVER_NAME ADD_SERVER_COMMAND]
"""

import json
import os
import sys
import time


def main():
    path = sys.argv[1]
    seconds = float(sys.argv[2])
    interval = float(sys.argv[3]) / 1000.0
    add = sys.argv[4:6] if len(sys.argv) >= 6 else None
    lock = path + ".lock"
    writes = 0
    waits = 0
    added = False
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while True:
            try:
                os.mkdir(lock)
                break
            except FileExistsError:
                waits += 1
                time.sleep(0.001)
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            config["numStartups"] = config.get("numStartups", 0) + 1
            config.setdefault("history", []).append(writes)
            if add and not added and writes >= 50:
                config.setdefault("mcpServers", {})[add[0]] = {
                    "type": "stdio",
                    "command": add[1],
                    "args": ["--late"],
                    "env": {},
                }
                added = True
            tmp = "%s.tmp.%d.%d" % (path, os.getpid(), int(time.time() * 1000))
            mode = os.stat(path).st_mode & 0o7777
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2)
            os.chmod(tmp, mode)
            os.rename(tmp, path)
            writes += 1
        finally:
            os.rmdir(lock)
        time.sleep(interval)
    print(json.dumps({"writes": writes, "lock_waits": waits}))


if __name__ == "__main__":
    main()
