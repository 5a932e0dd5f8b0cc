-- Privacy (gateway.privacy): erasure requests and their audit trail, the suppression list, and identities
-- hashed at rest.

-- A segment's identityHashing: 'sha256' stores each identity as the lowercase hex SHA-256 of its normalised
-- value (gateway.ingest.upload.normalise_identity); NULL stores it as sent. Changed only while it has no
-- members and no open REPLACE session.
ALTER TABLE segments ADD COLUMN identity_hashing text CHECK (identity_hashing IN ('sha256'));

-- One audit row per erasure request (a job of kind 'PrivacyErase'): who asked, when, what it found where.
-- Never the identities themselves: privacy_request_identities holds their SHA-256.
CREATE TABLE privacy_requests (
    job_id           bigint PRIMARY KEY REFERENCES jobs (id),
    endpoint_id      bigint NOT NULL REFERENCES endpoints (id),
    request_id       text NOT NULL,
    key_id           bigint NOT NULL,
    suppress         boolean NOT NULL,
    received         bigint NOT NULL,                -- rows or list entries sent
    invalid          bigint NOT NULL,                -- of them, unusable (an empty identity, a bad CSV row)
    invalid_samples  jsonb NOT NULL DEFAULT '[]',
    -- per segment id: {"members": n, "staged": n, "snapshots": n}, only where something was erased
    found            jsonb NOT NULL DEFAULT '{}',
    rejects_erased   bigint NOT NULL DEFAULT 0,      -- stored rejected rows whose text held an identity
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX privacy_requests_endpoint ON privacy_requests (endpoint_id, job_id);

CREATE TABLE privacy_request_identities (
    job_id           bigint NOT NULL REFERENCES privacy_requests (job_id) ON DELETE CASCADE,
    identity_sha256  text COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, identity_sha256)
);
CREATE INDEX privacy_request_identities_hash ON privacy_request_identities (identity_sha256);

-- The identities of an erasure until its job completes (then deleted, in the job's last transaction), in
-- each form a segment may store them: as sent (trimmed), lower-cased (email columns), and both hashed.
CREATE TABLE privacy_erase_identities (
    job_id          bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    plain           text COLLATE "C" NOT NULL,
    lowered         text COLLATE "C" NOT NULL,
    plain_sha256    text COLLATE "C" NOT NULL,
    lowered_sha256  text COLLATE "C" NOT NULL
);
CREATE INDEX privacy_erase_identities_job ON privacy_erase_identities (job_id);

-- The suppression list: pushes to the endpoint skip these identities. Held as the lowercase hex SHA-256 of
-- the identity (as sent and lower-cased: two rows), never as text.
CREATE TABLE suppressions (
    endpoint_id      bigint NOT NULL REFERENCES endpoints (id),
    identity_sha256  text COLLATE "C" NOT NULL,
    job_id           bigint REFERENCES jobs (id) ON DELETE SET NULL,  -- the erasure that added it
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (endpoint_id, identity_sha256)
);

-- Erase job $2's identities from one segment, in the form $3 (a column of privacy_erase_identities) that
-- segment stores: its members, the staging tables of its open REPLACE sessions (a share committed later
-- cannot bring them back) and its export snapshots that are still kept. The caller holds the segment's apply
-- lock exclusively (gateway.audience.segments.hold_segment) and declared its change feed; this takes the
-- segment's row (as a push does) and its open sessions (waiting for batches staging into them). Returns
-- {members, staged, snapshot rows} erased. Table names are made from integer ids only.
CREATE FUNCTION privacy_erase_segment(segment bigint, job bigint, form text) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    identity_attribute text;
    members bigint := 0;
    staged bigint := 0;
    exported bigint := 0;
    n bigint;
    open_session record;
    export record;
BEGIN
    IF form NOT IN ('plain', 'lowered', 'plain_sha256', 'lowered_sha256') THEN
        RAISE EXCEPTION 'unknown identity form %', form;
    END IF;
    SELECT s.identity_attribute INTO identity_attribute FROM segments s WHERE s.id = segment FOR NO KEY UPDATE;
    IF to_regclass(format('audience.%I', 'members_' || segment)) IS NOT NULL THEN
        EXECUTE format('DELETE FROM audience.%I m USING privacy_erase_identities e '
                       'WHERE e.job_id = $1 AND m.identity = e.%I', 'members_' || segment, form) USING job;
        GET DIAGNOSTICS members = ROW_COUNT;
        IF members > 0 THEN
            UPDATE segments SET member_count = member_count - members, updated_at = clock_timestamp()
            WHERE id = segment;
        END IF;
    END IF;
    FOR open_session IN SELECT id FROM replace_sessions WHERE segment_id = segment AND status = 'open'
                        ORDER BY id FOR UPDATE LOOP
        IF to_regclass(format('staging.%I', 'replace_' || open_session.id)) IS NOT NULL THEN
            EXECUTE format('DELETE FROM staging.%I t USING privacy_erase_identities e '
                           'WHERE e.job_id = $1 AND t.identity = e.%I', 'replace_' || open_session.id, form)
                USING job;
            GET DIAGNOSTICS n = ROW_COUNT;
            staged := staged + n;
        END IF;
    END LOOP;
    FOR export IN SELECT j.id, array_position(j.attributes, identity_attribute) AS position FROM jobs j
                  WHERE j.segment_id = segment AND j.kind = 'ExportSegmentData' AND j.data_dropped_at IS NULL
                    AND j.status IN ('complete', 'canceled')
                  ORDER BY j.id FOR UPDATE LOOP
        IF export.position IS NOT NULL AND to_regclass(format('exports.%I', 'job_' || export.id)) IS NOT NULL THEN
            EXECUTE format('DELETE FROM exports.%I x USING privacy_erase_identities e '
                           'WHERE e.job_id = $1 AND x.attrs[%s] = e.%I COLLATE "C"',
                           'job_' || export.id, export.position, form) USING job;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n > 0 THEN
                -- the download's length is measured again; its rows are fewer
                UPDATE jobs SET row_count = row_count - n, data_bytes = NULL WHERE id = export.id;
                exported := exported + n;
            END IF;
        END IF;
    END LOOP;
    RETURN ARRAY[members, staged, exported];
END $$;
