-- Running jobs by when their row last changed: the router asks linked nodes about the jobs that
-- have been quiet longest (jobs that ended there but were not read), without walking every
-- job a node ever ran.
CREATE INDEX jobs_running_updated ON jobs (updated_at) WHERE status = 'running';
