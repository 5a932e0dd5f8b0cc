-- Erasure reaches export files (gateway.jobs.export_files) and changes the download identity of the export
-- snapshots it shortens (gateway.api.jobs).

-- The last erasure (its job id) that went over the segment while an export file job of it was running, or
-- that erased members from it. An export file job reads it in its snapshot and compares it when it
-- completes: a different value means an erasure ran after the snapshot (and may have read the job list
-- before the job completed), so the file, which may hold what was erased, is removed.
ALTER TABLE segments ADD COLUMN erased_by bigint;

-- An export file removed by an erasure (its job id): the job stays SUCCEEDED, its download answers 410.
ALTER TABLE export_files ADD COLUMN erased_by bigint, ADD COLUMN erased_at timestamptz;

-- How many times erasures deleted rows from an export snapshot: part of its download's ETag, so a resumed
-- range request (If-Range) never joins bytes from before an erasure to bytes from after it.
ALTER TABLE jobs ADD COLUMN data_erasures integer NOT NULL DEFAULT 0;

-- As in 0012, with two changes: the segment records the erasure (erased_by) when it erased members or an
-- export file job of the segment is running (whose snapshot may hold an identity a push removed since),
-- and a shortened export snapshot counts an erasure (data_erasures) as well as forgetting its length.
CREATE OR REPLACE FUNCTION privacy_erase_segment(segment bigint, job bigint, form text) RETURNS bigint[]
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
    END IF;
    -- A running export file job may have read the segment before a push removed an identity this erasure
    -- then finds nowhere: its file is checked when it completes (erased_by). Else only when members went:
    -- a row version more makes REPEATABLE READ readers of the segment start again.
    IF members > 0 OR EXISTS (SELECT 1 FROM jobs j WHERE j.segment_id = segment AND j.kind = 'ExportFile'
                                                     AND j.status = 'running') THEN
        UPDATE segments SET erased_by = job, member_count = member_count - members,
                            updated_at = CASE WHEN members > 0 THEN clock_timestamp() ELSE updated_at END
        WHERE id = segment;
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
                -- other bytes: a new ETag, the length measured again
                UPDATE jobs SET row_count = row_count - n, data_bytes = NULL, data_erasures = data_erasures + 1
                WHERE id = export.id;
                exported := exported + n;
            END IF;
        END IF;
    END LOOP;
    RETURN ARRAY[members, staged, exported];
END $$;
