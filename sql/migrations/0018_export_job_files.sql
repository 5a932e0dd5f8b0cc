-- /v1 export jobs write their snapshot as a csv file in GATEWAY_EXPORT_DIR (gateway.jobs.exports), named by
-- jobs.data_file, instead of a table exports.job_<id> (jobs made before keep their table until they expire).
-- A /v1 job still writing when an erasure goes over its segment must learn it when it completes, as an
-- export file job does (gateway.jobs.export_files.erased_since): the segment's erased_by now also moves
-- while one runs. Its completed file is rewritten without the erased rows (gateway.jobs.erasure).

ALTER TABLE jobs ADD COLUMN data_file text;

-- As in 0017, with one change: running ExportSegmentData jobs move erased_by as ExportFile jobs do.
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
    -- A running export job (a file, or a /v1 job's snapshot file) may have read the segment before a push removed an identity this erasure
    -- then finds nowhere: its file is checked when it completes (erased_by). A running segment job of the
    -- endpoint may have built this definition's audience from sources read before this erasure: its swap
    -- compares erased_by and builds again (gateway.segmentation.evaluate). Else only when members went:
    -- a row version more makes REPEATABLE READ readers of the segment start again.
    IF members > 0 OR EXISTS (SELECT 1 FROM jobs j WHERE j.segment_id = segment
                                                     AND j.kind IN ('ExportFile', 'ExportSegmentData')
                                                     AND j.status = 'running')
                   OR EXISTS (SELECT 1 FROM segment_definitions d JOIN jobs j ON j.endpoint_id = d.endpoint_id
                              WHERE d.audience_segment_id = segment AND j.kind = 'SegmentJob'
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
