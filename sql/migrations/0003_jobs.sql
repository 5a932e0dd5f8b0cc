-- Export jobs (Exchange pulls): claimed by workers with FOR UPDATE SKIP LOCKED under a lease; each
-- completed job's snapshot is a table exports.job_<id> (a table, not a file, so any gateway process or
-- host on this database can serve the download).
CREATE SCHEMA exports;

CREATE TABLE jobs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- jobDataId: names the job's data; random so that a job id alone does not reach the data
    data_id           bigint NOT NULL DEFAULT (1 + floor(random() * 2147483646))::bigint,
    endpoint_id       bigint NOT NULL REFERENCES endpoints (id),
    segment_id        bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    job_type          text NOT NULL CHECK (job_type = 'ExportSegmentData'),
    status            text NOT NULL DEFAULT 'waiting'
                      CHECK (status IN ('waiting', 'running', 'complete', 'error', 'canceled')),
    reason            text,
    attempts          integer NOT NULL DEFAULT 0,
    lease_owner       text,
    lease_expires_at  timestamptz,
    attributes        text[],  -- the export's header, as of the snapshot
    row_count         bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    expires_at        timestamptz,  -- the data answers 410 after this
    data_dropped_at   timestamptz
);
CREATE INDEX jobs_to_claim ON jobs (id) WHERE status IN ('waiting', 'running');
CREATE INDEX jobs_to_expire ON jobs (expires_at) WHERE data_dropped_at IS NULL AND expires_at IS NOT NULL;
