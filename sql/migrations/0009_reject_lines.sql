-- Rejected rows by share (issue 13): an upload records the batch's firstLine (the pushed file's line of its
-- body's first data row; NULL: its rejects are numbered by the body's lines), and the rejects of a share are
-- found by replace session or sourceSegmentID among a segment's uploads.

ALTER TABLE uploads ADD COLUMN first_line bigint;

CREATE OR REPLACE FUNCTION record_upload(entry jsonb) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO uploads (id, segment_id, method, total_batches, batch_number, replace_session_id,
                         replace_committed, num_received, num_invalid, num_added, num_removed,
                         rejects_stored, rejects_not_stored, ids, category, source_endpoint_id,
                         source_segment_id, request_id, started_at, duration_s, first_line)
    SELECT coalesce(r.id, nextval('uploads_id_seq')), r.segment_id, r.method, r.total_batches, r.batch_number,
           r.replace_session_id, r.replace_committed, r.num_received, r.num_invalid, r.num_added,
           r.num_removed, r.rejects_stored, r.rejects_not_stored, r.ids, r.category, r.source_endpoint_id,
           r.source_segment_id, r.request_id, r.started_at, r.duration_s, r.first_line
    FROM jsonb_populate_record(NULL::uploads, entry) AS r
    RETURNING id;
$$;

CREATE INDEX uploads_source_segment_idx ON uploads (segment_id, source_segment_id);
CREATE INDEX uploads_replace_session_idx ON uploads (segment_id, replace_session_id)
    WHERE replace_session_id IS NOT NULL;
