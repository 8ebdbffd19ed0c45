-- Alerts the router raised on nodes, and each operator's alert settings. PostgreSQL dialect; keep in
-- step with ../sqlite/0006_alerts.sql.

-- One row per alert: fired once, resolved once. At most one firing row per node, rule and
-- subject (the unique index), so that of several replicas only one sends it.
CREATE TABLE alerts (
    id           TEXT NOT NULL PRIMARY KEY,
    node         TEXT NOT NULL,
    rule         TEXT NOT NULL,
    -- What on the node: '' for the node itself, a container id, a wallet, a GPU index.
    subject      TEXT NOT NULL,
    -- Hex keys of the operators the node named when it fired, space-separated.
    operators    TEXT NOT NULL,
    summary      TEXT NOT NULL,
    -- 'firing' or 'resolved'.
    status       TEXT NOT NULL,
    -- Not delivered: a silence matched.
    silenced     BIGINT NOT NULL DEFAULT 0,
    started_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    acked_at     BIGINT,
    acked_by     TEXT
);
CREATE UNIQUE INDEX alerts_firing ON alerts (node, rule, subject) WHERE status = 'firing';
CREATE INDEX alerts_started ON alerts (started_at);

-- An operator's rules, webhooks and silences, as a JSON document.
CREATE TABLE alert_settings (
    operator    TEXT NOT NULL PRIMARY KEY,
    settings    TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
