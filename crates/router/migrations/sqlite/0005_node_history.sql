-- The control interface's plots: per node, what its signed heartbeats said, summed per minute
-- (step 60, kept 48 h) and per hour (step 3600, kept 90 days). Gauges are sums over `samples`
-- (the plot shows their mean); jobs_ok and jobs_failed are the node's running totals as last
-- reported in the bucket (the plot shows their differences).
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
    PRIMARY KEY (node, step, bucket)
) STRICT;
