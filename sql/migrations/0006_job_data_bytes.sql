-- The exact length in bytes of a completed job's CSV download (header row included), learnt lazily: stored
-- by the first full download that streams to its end, or measured for the first range request. It lets
-- the download announce Content-Length and serve byte ranges (206) so that a broken download can resume.
-- NULL until then.
ALTER TABLE jobs ADD COLUMN data_bytes bigint;
