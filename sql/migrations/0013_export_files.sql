-- Export jobs to files (gateway.jobs.export_files): rows of jobs (kind 'ExportFile', segment_id the
-- filter's segment) run by the generic queue; what each one asked for, how far it got and what it wrote.
-- The file itself lives in GATEWAY_EXPORT_DIR under file_name; the sweep removes it when the job's data
-- expires (jobs.expires_at) or the job is canceled (jobs.data_dropped_at is then set).
CREATE TABLE export_files (
    job_id      bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    fields      text[],                 -- attribute names as asked for; NULL: every attribute
    format      text NOT NULL CHECK (format IN ('csv', 'csv.gz', 'ndjson')),
    expression  text,                   -- the filter's PQL expression over the segment's members; NULL: all
    progress    bigint NOT NULL DEFAULT 0,  -- rows written so far (updated about once a second)
    file_name   text,                   -- set with completion: the file's name inside GATEWAY_EXPORT_DIR
    bytes       bigint,
    sha256      text
);
