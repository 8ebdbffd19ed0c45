-- The ledger summed per node, operator, UTC day and container set, so that earnings over a year
-- read a few hundred rows instead of every job. SQLite dialect; keep in step with
-- ../postgres/0007_ledger_days.sql.
--
-- Exact: the batch writer adds a ledger row here in the transaction that inserts it (rows are
-- written once, when their job has ended, and never updated), and retention deletes a day here
-- with the ledger rows it sums (see db/ledger.rs). The day is `finished_at / 86400000`.
CREATE TABLE ledger_days (
    node          TEXT NOT NULL,
    day           INTEGER NOT NULL,
    -- The rows' operator (hex key), '' for rows without one.
    operator      TEXT NOT NULL,
    -- The containers, as the ledger's `containers` column holds them.
    containers    TEXT NOT NULL,
    jobs          INTEGER NOT NULL,
    succeeded     INTEGER NOT NULL,
    -- Prices summed (a row without a price adds 0), in the rows' unit.
    earned        REAL NOT NULL,
    duration_ms   INTEGER NOT NULL,
    -- Durations of the rows that succeeded, summed (for the mean latency per container set).
    succeeded_ms  INTEGER NOT NULL,
    PRIMARY KEY (node, day, operator, containers)
) STRICT;
CREATE INDEX ledger_days_operator ON ledger_days (operator, day);

INSERT INTO ledger_days (node, day, operator, containers, jobs, succeeded, earned, duration_ms, succeeded_ms)
SELECT node, finished_at / 86400000, COALESCE(operator, ''), containers, COUNT(*),
       SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END), COALESCE(SUM(price), 0.0),
       SUM(duration_ms), SUM(CASE WHEN outcome = 'succeeded' THEN duration_ms ELSE 0 END)
FROM ledger GROUP BY node, finished_at / 86400000, COALESCE(operator, ''), containers;
