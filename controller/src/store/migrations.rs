//! The SQLite schema, as an append-only list of migrations.

/// Migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit one that
/// has shipped: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE policies (
        tenant TEXT NOT NULL,
        version INTEGER NOT NULL,
        document TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        bundle BLOB NOT NULL,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        pushed_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        rollback_of INTEGER,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, version)
    ) WITHOUT ROWID;
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        max_uses INTEGER NOT NULL,
        uses INTEGER NOT NULL,
        labels TEXT NOT NULL,
        revoked INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL
    );
    CREATE TABLE agents (
        agent_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        hostname TEXT NOT NULL,
        labels TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL,
        last_seen INTEGER,
        applied_version INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        revoked_at INTEGER,
        cert_not_after INTEGER NOT NULL,
        inventory TEXT,
        agent_version TEXT NOT NULL,
        token_id TEXT NOT NULL
    );
    CREATE INDEX agents_tenant ON agents (tenant, applied_version);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_tenant ON audit (tenant, id);",
    // 2: behavioral events, per-agent chain state, sink cursors.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        session_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        chain_ok INTEGER NOT NULL,
        json TEXT NOT NULL
    );
    CREATE INDEX events_tenant_time ON events (tenant, timestamp);
    CREATE INDEX events_agent ON events (agent_id, seq);
    CREATE INDEX events_tool ON events (tool_name);
    CREATE INDEX events_session ON events (session_id);
    CREATE TABLE chains (
        agent_id TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL,
        last_hash TEXT NOT NULL
    );
    CREATE TABLE sink_cursors (
        sink TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    );",
    // 3: events are de-duplicated per (tenant, agent, eventId) and only for the identical record,
    // so the global UNIQUE on event_id goes (one agent could pre-empt another's ids). SQLite
    // cannot drop a constraint: the table is rebuilt with its ids, and the AUTOINCREMENT
    // high-water mark is carried over so that no id is ever given out twice (sink cursors point
    // past it).
    "CREATE TABLE events_v3 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        session_id TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        chain_ok INTEGER NOT NULL,
        json TEXT NOT NULL
    );
    INSERT INTO events_v3 (id, event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json)
        SELECT id, event_id, tenant, agent_id, seq, event_type, session_id, tool_name, timestamp, chain_ok, json
        FROM events ORDER BY id;
    DELETE FROM sqlite_sequence WHERE name = 'events_v3';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'events_v3', MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                                COALESCE((SELECT MAX(id) FROM events), 0));
    DROP TABLE events;
    ALTER TABLE events_v3 RENAME TO events;
    CREATE INDEX events_tenant_time ON events (tenant, timestamp);
    CREATE INDEX events_agent ON events (agent_id, seq);
    CREATE INDEX events_tool ON events (tool_name);
    CREATE INDEX events_session ON events (session_id);
    CREATE INDEX events_agent_event ON events (tenant, agent_id, event_id);",
    // 4: admin credentials (issue 13, finding 17): every issued admin certificate is recorded (by
    // fingerprint) so it can be listed and revoked; a revoked one is refused at the TLS handshake
    // and at each request.
    "CREATE TABLE admin_credentials (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        tenant TEXT NOT NULL,
        not_after INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        revoked_at INTEGER,
        revoked_by TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX admin_credentials_name ON admin_credentials (name);",
    // 5: ingest de-duplicates by digest (SHA-256 of the record's JSON), through an index, never by
    // loading and comparing stored bodies. Existing rows get their digest right after this runs,
    // in the same transaction (`sqlite::backfill_digests`: SQLite has no SHA-256), and only then
    // is the index built ([`DIGEST_INDEX`]), once, instead of being updated row by row.
    "ALTER TABLE events ADD COLUMN digest TEXT;",
    // 6: an agent's MCP inventory (up to 512 KiB of text) moves out of its `agents` row into
    // `agent_mcp`, with the SHA-256 of its JSON: a heartbeat updates the small row and rewrites
    // the MCP inventory only when it changed; listing agents without it never reads it. Moved
    // rows get an empty digest (SQLite has no SHA-256): their next report stores it once.
    // Agents are paged by (tenant, agent_id), through an index.
    "CREATE TABLE agent_mcp (
        agent_id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        mcp TEXT NOT NULL
    );
    INSERT INTO agent_mcp (agent_id, sha256, mcp)
        SELECT agent_id, '', json_object(
            'mcpServers', json(json_extract(inventory, '$.mcpServers')),
            'mcpFiles', json(CASE json_type(inventory, '$.mcpFiles')
                WHEN 'array' THEN json_extract(inventory, '$.mcpFiles') ELSE '[]' END))
        FROM agents
        WHERE inventory IS NOT NULL AND json_valid(inventory)
            AND json_type(inventory, '$.mcpServers') = 'array';
    UPDATE agents SET inventory = json_remove(inventory, '$.mcpServers', '$.mcpFiles')
        WHERE inventory IS NOT NULL AND json_valid(inventory);
    CREATE INDEX agents_tenant_id ON agents (tenant, agent_id);",
    // 7: the approval queue (issue 16): one row per (agent, approval id), pending until an admin
    // decides, the agent withdraws it, or it expires.
    "CREATE TABLE approvals (
        agent_id TEXT NOT NULL,
        approval_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        hostname TEXT NOT NULL,
        user TEXT NOT NULL,
        session_id TEXT NOT NULL,
        server_name TEXT NOT NULL,
        tool_name TEXT NOT NULL,
        content TEXT NOT NULL,
        reason TEXT NOT NULL,
        timeout_secs INTEGER NOT NULL,
        arguments_sha256 TEXT NOT NULL,
        client_name TEXT NOT NULL,
        approvers TEXT NOT NULL,
        remember TEXT NOT NULL,
        requested_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        decided_ms INTEGER NOT NULL,
        decided_by TEXT NOT NULL,
        decision_reason TEXT NOT NULL,
        decision_remember TEXT NOT NULL,
        PRIMARY KEY (agent_id, approval_id)
    );
    CREATE UNIQUE INDEX approvals_id ON approvals (approval_id);
    CREATE INDEX approvals_tenant ON approvals (tenant, state, requested_ms);
    CREATE INDEX approvals_pending ON approvals (state, expires_ms);",
    // 8: tool integrity (issue 17): the tool definitions each agent reports pinned (rewritten
    // only when the report's digest in `agent_tool_pins` changes) and admins' decisions on
    // definitions, per tenant (`thothctl pins accept|reject`).
    "CREATE TABLE tool_pins (
        agent_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
        client TEXT NOT NULL,
        server_name TEXT NOT NULL,
        server_key TEXT NOT NULL,
        command TEXT NOT NULL,
        tool TEXT NOT NULL,
        digest TEXT NOT NULL,
        state TEXT NOT NULL,
        pending_digest TEXT NOT NULL,
        source TEXT NOT NULL,
        accepted INTEGER NOT NULL,
        changes TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        changed_ms INTEGER NOT NULL
    );
    CREATE INDEX tool_pins_agent ON tool_pins (agent_id);
    CREATE INDEX tool_pins_tenant ON tool_pins (tenant, server_key, tool);
    CREATE TABLE agent_tool_pins (
        agent_id TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        reported_ms INTEGER NOT NULL
    );
    CREATE TABLE pin_decisions (
        tenant TEXT NOT NULL,
        server_key TEXT NOT NULL,
        tool TEXT NOT NULL,
        digest TEXT NOT NULL,
        accepted INTEGER NOT NULL,
        decided_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        decided_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, server_key, tool, digest)
    ) WITHOUT ROWID;
    CREATE INDEX pin_decisions_time ON pin_decisions (tenant, decided_ms);",
    // 9: tool integrity: the pending definition's description (cut to 2 KiB), for admins to
    // read before they accept it.
    "ALTER TABLE tool_pins ADD COLUMN pending_description TEXT NOT NULL DEFAULT '';",
];

/// The migration (1-based) after which existing events get their digest.
pub const DIGEST_MIGRATION: usize = 5;

/// The rest of migration 5, in its transaction after the backfill: the digest index.
pub const DIGEST_INDEX: &str =
    "CREATE INDEX events_agent_event_digest ON events (tenant, agent_id, event_id, digest);
    DROP INDEX events_agent_event;";
