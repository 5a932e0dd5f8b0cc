-- The exact length in bytes of a completed job's CSV download (header row included), measured by the
-- worker when it takes the snapshot: it lets the download announce Content-Length and serve byte ranges
-- (206) so that a broken download can resume. NULL for jobs completed before this column existed.
ALTER TABLE jobs ADD COLUMN data_bytes bigint;
