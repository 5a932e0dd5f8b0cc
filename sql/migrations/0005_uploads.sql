-- Upload history (one row per applied batch) and every rejected row of each upload.

-- Ids come from a plain sequence so that an upload can take its id while its body still streams (its
-- first rejected rows are stored before the row itself is written at the end of its transaction).
CREATE SEQUENCE uploads_id_seq;

CREATE TABLE uploads (
    id                  bigint PRIMARY KEY DEFAULT nextval('uploads_id_seq'),
    segment_id          bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    method              text NOT NULL CHECK (method IN ('ADD', 'REPLACE', 'REMOVE')),
    total_batches       integer NOT NULL,
    batch_number        integer NOT NULL,
    -- REPLACE only; no foreign key: sessions are forgotten one TTL after they end, history stays longer
    replace_session_id  bigint,
    replace_committed   boolean,
    late_retry          boolean NOT NULL,  -- a committed share's batch sent again: answered, nothing applied
    num_received        bigint NOT NULL,
    num_invalid         bigint NOT NULL,
    num_added           bigint,
    num_removed         bigint,
    rejects_stored      bigint NOT NULL,  -- invalid rows kept in upload_rejects
    rejects_not_stored  bigint NOT NULL,  -- invalid rows over the segment's cap: counted only
    rejects_expired_at  timestamptz,      -- when the sweeper dropped its rejects
    ids                 text NOT NULL,
    category            text NOT NULL,
    source_endpoint_id  text NOT NULL,
    source_segment_id   text NOT NULL,
    request_id          text NOT NULL,
    started_at          timestamptz NOT NULL,
    duration_s          double precision NOT NULL
);
ALTER SEQUENCE uploads_id_seq OWNED BY uploads.id;
CREATE INDEX uploads_segment_idx ON uploads (segment_id, id);
CREATE INDEX uploads_started_idx ON uploads (started_at);

-- No foreign key: rows are COPYed in while the body streams, before their upload's row exists; the
-- trigger below is the cascade.
CREATE TABLE upload_rejects (
    upload_id  bigint NOT NULL,
    line       bigint NOT NULL,
    reason     text NOT NULL,
    raw        text NOT NULL
);
CREATE INDEX upload_rejects_upload_idx ON upload_rejects (upload_id, line);

CREATE FUNCTION uploads_drop_rejects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM upload_rejects r USING gone WHERE r.upload_id = gone.id;
    RETURN NULL;
END $$;

CREATE TRIGGER uploads_drop_rejects AFTER DELETE ON uploads
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION uploads_drop_rejects();

-- One upload's history row from a JSON object whose keys are the column names (every column but
-- rejects_expired_at; "id" may be null: a new id is taken). Called from the statement that applies the
-- batch (gateway.uploads), so that recording history costs no extra round trip.
CREATE FUNCTION record_upload(entry jsonb) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO uploads (id, segment_id, method, total_batches, batch_number, replace_session_id,
                         replace_committed, late_retry, num_received, num_invalid, num_added, num_removed,
                         rejects_stored, rejects_not_stored, ids, category, source_endpoint_id,
                         source_segment_id, request_id, started_at, duration_s)
    SELECT coalesce(r.id, nextval('uploads_id_seq')), r.segment_id, r.method, r.total_batches, r.batch_number,
           r.replace_session_id, r.replace_committed, r.late_retry, r.num_received, r.num_invalid, r.num_added,
           r.num_removed, r.rejects_stored, r.rejects_not_stored, r.ids, r.category, r.source_endpoint_id,
           r.source_segment_id, r.request_id, r.started_at, r.duration_s
    FROM jsonb_populate_record(NULL::uploads, entry) AS r
    RETURNING id;
$$;
