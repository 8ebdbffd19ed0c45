-- The control interface's plots: per node, what its signed heartbeats said, summed per minute
-- (step 60, kept 48 h) and per hour (step 3600, kept 90 days). Gauges are sums over `samples`
-- (the plot shows their mean); jobs_ok and jobs_failed are the node's running totals as last
-- reported in the bucket (the plot shows their differences); lat0..lat14 count the jobs that
-- finished in the bucket per latency bucket of the node's histogram (upper bounds 0.5 ms, 1 ms,
-- 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 5 s, 30 s, 180 s, above).
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
    lat0         BIGINT NOT NULL DEFAULT 0,
    lat1         BIGINT NOT NULL DEFAULT 0,
    lat2         BIGINT NOT NULL DEFAULT 0,
    lat3         BIGINT NOT NULL DEFAULT 0,
    lat4         BIGINT NOT NULL DEFAULT 0,
    lat5         BIGINT NOT NULL DEFAULT 0,
    lat6         BIGINT NOT NULL DEFAULT 0,
    lat7         BIGINT NOT NULL DEFAULT 0,
    lat8         BIGINT NOT NULL DEFAULT 0,
    lat9         BIGINT NOT NULL DEFAULT 0,
    lat10        BIGINT NOT NULL DEFAULT 0,
    lat11        BIGINT NOT NULL DEFAULT 0,
    lat12        BIGINT NOT NULL DEFAULT 0,
    lat13        BIGINT NOT NULL DEFAULT 0,
    lat14        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (node, step, bucket)
);
