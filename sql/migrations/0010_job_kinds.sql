-- One queue for every kind of background work (gateway.jobs.queue): a job's kind names the code that runs
-- it. Existing rows are export snapshots: job_type (which allowed only 'ExportSegmentData') becomes kind,
-- their value unchanged. A kind of work that is not about one segment (erasure) has no segment_id; an
-- export always has one.
ALTER TABLE jobs RENAME COLUMN job_type TO kind;
ALTER TABLE jobs DROP CONSTRAINT jobs_job_type_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind <> '');
ALTER TABLE jobs ALTER COLUMN segment_id DROP NOT NULL;
ALTER TABLE jobs ADD CONSTRAINT jobs_export_segment_check
    CHECK (kind <> 'ExportSegmentData' OR segment_id IS NOT NULL);
