-- The control interface's plots: per node, what its signed heartbeats said, summed per minute
-- (step 60, kept 48 h) and per hour (step 3600, kept 90 days). Gauges are sums over `samples`
-- (the plot shows their mean); jobs_ok and jobs_failed are the node's running totals as last
-- reported in the bucket (the plot shows their differences).
CREATE TABLE node_history (
    node         TEXT NOT NULL,
    step         BIGINT NOT NULL,
    bucket       BIGINT NOT NULL,
    samples      BIGINT NOT NULL,
    cpu_sum      DOUBLE PRECISION NOT NULL,
    memory_sum   DOUBLE PRECISION NOT NULL,
    gpu_sum      DOUBLE PRECISION NOT NULL,
    gpu_samples  BIGINT NOT NULL,
    pending_sum  BIGINT NOT NULL,
    jobs_ok      BIGINT NOT NULL,
    jobs_failed  BIGINT NOT NULL,
    PRIMARY KEY (node, step, bucket)
);
