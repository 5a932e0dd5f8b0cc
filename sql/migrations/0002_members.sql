-- Members: one table per segment, audience.members_<segment id> (identity text COLLATE "C" PRIMARY KEY,
-- attrs text[] aligned with segments.attributes). One table per segment makes REPLACE "build a new table,
-- index it after the load, swap it in by rename" instead of maintaining an index row by row.
CREATE SCHEMA audience;

-- Staged REPLACE batches: one table per open replace session, staging.replace_<session id>.
CREATE SCHEMA staging;

ALTER TABLE segments ADD COLUMN member_count bigint NOT NULL DEFAULT 0;
ALTER TABLE segments ADD COLUMN last_upload_at timestamptz;

CREATE TABLE replace_sessions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    segment_id          bigint NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    total_batches       integer NOT NULL CHECK (total_batches > 0),
    ids                 text NOT NULL DEFAULT '',
    source_endpoint_id  text NOT NULL DEFAULT '',
    source_segment_id   text NOT NULL DEFAULT '',
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'committed', 'expired')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_batch_at       timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz  -- committed or expired
);
-- At most one open session per key.
CREATE UNIQUE INDEX replace_sessions_open_key
    ON replace_sessions (segment_id, total_batches, ids, source_endpoint_id, source_segment_id)
    WHERE status = 'open';
CREATE INDEX replace_sessions_committed_key
    ON replace_sessions (segment_id, total_batches, ids, source_endpoint_id, source_segment_id, ended_at)
    WHERE status = 'committed';

-- What each batch staged, and the response it got (a late retry of a committed share gets it again).
CREATE TABLE replace_batches (
    session_id    bigint NOT NULL REFERENCES replace_sessions (id) ON DELETE CASCADE,
    batch_number  integer NOT NULL CHECK (batch_number > 0),
    body_hash     bytea NOT NULL,
    response      jsonb NOT NULL,
    staged_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, batch_number)
);
