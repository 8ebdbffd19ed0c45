-- Jobs counted against API keys' quotas, per key and fixed window. Keep in step with
-- ../sqlite/0002_api_key_usage.sql. Counting in the database makes a quota hold across router
-- replicas sharing it: the increment and the check are one statement.
CREATE TABLE api_key_usage (
    key_id        TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- 'minute' or 'day'.
    span          TEXT NOT NULL CHECK (span IN ('minute', 'day')),
    -- Start of the window (Unix ms, a multiple of the span).
    window_start  BIGINT NOT NULL,
    used          BIGINT NOT NULL,
    PRIMARY KEY (key_id, span, window_start)
);
CREATE INDEX api_key_usage_window ON api_key_usage (window_start);
