-- Segment metadata for the /api management routes: soft delete, purge, and change times for the feed.
--
-- Change times are clock_timestamp() taken when the change is written (never now(), the transaction's
-- start): gateway.changefeed's watermark relies on a change's time being no earlier than the moment its
-- transaction got a transaction id.
ALTER TABLE segments
    ALTER COLUMN created_at SET DEFAULT clock_timestamp(),
    ALTER COLUMN updated_at SET DEFAULT clock_timestamp(),
    -- name, description, category, type or status changed (the mappings view); updated_at also moves
    -- when the membership changes
    ADD COLUMN metadata_updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ADD COLUMN deleted_at timestamptz,  -- status 'deleted' since; members are purged a grace period later
    ADD COLUMN purged_at timestamptz;   -- members, staged batches and export data dropped

UPDATE segments SET metadata_updated_at = updated_at;
UPDATE segments SET deleted_at = updated_at WHERE status = 'deleted';

CREATE INDEX segments_to_purge ON segments (deleted_at) WHERE status = 'deleted' AND purged_at IS NULL;
