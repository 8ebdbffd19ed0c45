-- The inputs of jobs running on linked nodes, kept so that a job whose node's link closed after it
-- accepted the job can run again elsewhere once its lease ran out. Deleted once the job ended.
CREATE TABLE link_inputs (
    job_id      TEXT NOT NULL PRIMARY KEY,
    -- The job as its client asked for it (JSON).
    ask         TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

