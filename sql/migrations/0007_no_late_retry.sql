-- A REPLACE always replaces: the "late retry" shortcut (a batch whose body matched one of a committed
-- share got that share's recorded answer and changed nothing) is gone, and with it what only it read:
-- the body hash and recorded response of each staged batch, the index that found committed sessions, and
-- the history flag. History rows written as late retries stay readable: they are the REPLACE rows without
-- a replace_session_id (every staged batch has one).

CREATE OR REPLACE FUNCTION record_upload(entry jsonb) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO uploads (id, segment_id, method, total_batches, batch_number, replace_session_id,
                         replace_committed, num_received, num_invalid, num_added, num_removed,
                         rejects_stored, rejects_not_stored, ids, category, source_endpoint_id,
                         source_segment_id, request_id, started_at, duration_s)
    SELECT coalesce(r.id, nextval('uploads_id_seq')), r.segment_id, r.method, r.total_batches, r.batch_number,
           r.replace_session_id, r.replace_committed, r.num_received, r.num_invalid, r.num_added,
           r.num_removed, r.rejects_stored, r.rejects_not_stored, r.ids, r.category, r.source_endpoint_id,
           r.source_segment_id, r.request_id, r.started_at, r.duration_s
    FROM jsonb_populate_record(NULL::uploads, entry) AS r
    RETURNING id;
$$;

ALTER TABLE uploads DROP COLUMN late_retry;
ALTER TABLE replace_batches DROP COLUMN body_hash, DROP COLUMN response;
DROP INDEX replace_sessions_committed_key;
