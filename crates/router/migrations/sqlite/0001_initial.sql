-- The router's state, SQLite dialect. Keep in step with ../postgres/0001_initial.sql: the test
-- `db::schema_is_the_same_on_both_dialects` compares the two. Times are Unix milliseconds, JSON
-- documents are TEXT. STRICT makes SQLite refuse a value of the wrong type, as PostgreSQL does.

-- An operator: a Nostr public key (64 hex) that a node's signed statement names.
CREATE TABLE operators (
    pubkey      TEXT NOT NULL PRIMARY KEY,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;

-- A node: its key is the node's Nostr public key (hex), or `host:port` for an unsigned one.
CREATE TABLE nodes (
    key                TEXT NOT NULL PRIMARY KEY,
    address            TEXT NOT NULL,
    operator           TEXT,
    first_seen         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    -- The node's last signed statement (hello or heartbeat), as it sent it.
    statement          TEXT,
    -- Health as the router measured it.
    probes_ok          INTEGER NOT NULL DEFAULT 0,
    probes_failed      INTEGER NOT NULL DEFAULT 0,
    failures_in_a_row  INTEGER NOT NULL DEFAULT 0,
    last_probe_at      INTEGER,
    jobs_ok            INTEGER NOT NULL DEFAULT 0,
    jobs_failed        INTEGER NOT NULL DEFAULT 0,
    latency_ms_sum     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX nodes_operator ON nodes (operator);
CREATE INDEX nodes_address ON nodes (address);

-- The settings document a node advertises (availability, pricing, limits).
CREATE TABLE node_settings (
    node        TEXT NOT NULL PRIMARY KEY REFERENCES nodes (key) ON DELETE CASCADE,
    settings    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- A job routed through the gateway: its record only, never its inputs or outputs.
CREATE TABLE jobs (
    id               TEXT NOT NULL PRIMARY KEY,
    -- Who submitted it: `npub:<hex>`, `key:<api key id>` or `addr:<hash of the address>`.
    client           TEXT NOT NULL,
    idempotency_key  TEXT,
    -- JSON array of container ids.
    containers       TEXT NOT NULL,
    status           TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    node             TEXT,
    -- The job's id on that node.
    node_job         TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    -- The router replica that holds the job, and until when.
    lease_owner      TEXT,
    lease_until      INTEGER,
    callback_url     TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    UNIQUE (client, idempotency_key)
) STRICT;
CREATE INDEX jobs_client ON jobs (client, created_at);
CREATE INDEX jobs_node ON jobs (node, created_at);
CREATE INDEX jobs_queued ON jobs (created_at) WHERE status = 'queued';
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE status = 'running';

-- One row per finished routed job: who ran what, for whom, and its price.
CREATE TABLE ledger (
    job_id       TEXT NOT NULL PRIMARY KEY,
    client       TEXT NOT NULL,
    api_key_id   TEXT,
    node         TEXT NOT NULL,
    operator     TEXT,
    containers   TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    duration_ms  INTEGER NOT NULL,
    -- By the node's advertised pricing, in `unit`; accounted, not settled.
    price        REAL,
    unit         TEXT,
    -- The receipt the node signed with its key, as it sent it.
    receipt      TEXT
) STRICT;
CREATE INDEX ledger_node ON ledger (node, finished_at);
CREATE INDEX ledger_operator ON ledger (operator, finished_at);
CREATE INDEX ledger_client ON ledger (client, finished_at);
CREATE INDEX ledger_finished ON ledger (finished_at);

-- API keys the operator issued; only a hash of the key is stored.
CREATE TABLE api_keys (
    id          TEXT NOT NULL PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    label       TEXT,
    -- Quotas; NULL is no limit.
    per_minute  INTEGER,
    per_day     INTEGER,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

-- Per node and minute (Unix time / 60), counters added up as they arrive.
CREATE TABLE metric_samples (
    node            TEXT NOT NULL,
    minute          INTEGER NOT NULL,
    jobs_ok         INTEGER NOT NULL,
    jobs_failed     INTEGER NOT NULL,
    latency_ms_sum  INTEGER NOT NULL,
    probes_ok       INTEGER NOT NULL,
    probes_failed   INTEGER NOT NULL,
    -- Times the router's choice left the node out, by filter ("why am I not getting jobs").
    excluded_price     INTEGER NOT NULL DEFAULT 0,
    excluded_hours     INTEGER NOT NULL DEFAULT 0,
    excluded_hardware  INTEGER NOT NULL DEFAULT 0,
    excluded_health    INTEGER NOT NULL DEFAULT 0,
    excluded_load      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, minute)
) STRICT;
CREATE INDEX metric_samples_minute ON metric_samples (minute);
