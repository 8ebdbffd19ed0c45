-- The control interface's plots: per node, what its signed heartbeats said, summed per minute
-- (step 60, kept 48 h) and per hour (step 3600, kept 90 days). Gauges are sums over `samples`
-- (the plot shows their mean); jobs_ok and jobs_failed are the node's running totals as last
-- reported in the bucket (the plot shows their differences); lat0..lat14 count the jobs that
-- finished in the bucket per latency bucket of the node's histogram (upper bounds 0.5 ms, 1 ms,
-- 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 5 s, 30 s, 180 s, above).
CREATE TABLE node_history (
    node         TEXT NOT NULL,
    step         INTEGER NOT NULL,
    bucket       INTEGER NOT NULL,
    samples      INTEGER NOT NULL,
    cpu_sum      REAL NOT NULL,
    memory_sum   REAL NOT NULL,
    gpu_sum      REAL NOT NULL,
    gpu_samples  INTEGER NOT NULL,
    pending_sum  INTEGER NOT NULL,
    jobs_ok      INTEGER NOT NULL,
    jobs_failed  INTEGER NOT NULL,
    lat0         INTEGER NOT NULL DEFAULT 0,
    lat1         INTEGER NOT NULL DEFAULT 0,
    lat2         INTEGER NOT NULL DEFAULT 0,
    lat3         INTEGER NOT NULL DEFAULT 0,
    lat4         INTEGER NOT NULL DEFAULT 0,
    lat5         INTEGER NOT NULL DEFAULT 0,
    lat6         INTEGER NOT NULL DEFAULT 0,
    lat7         INTEGER NOT NULL DEFAULT 0,
    lat8         INTEGER NOT NULL DEFAULT 0,
    lat9         INTEGER NOT NULL DEFAULT 0,
    lat10        INTEGER NOT NULL DEFAULT 0,
    lat11        INTEGER NOT NULL DEFAULT 0,
    lat12        INTEGER NOT NULL DEFAULT 0,
    lat13        INTEGER NOT NULL DEFAULT 0,
    lat14        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, step, bucket)
) STRICT;
