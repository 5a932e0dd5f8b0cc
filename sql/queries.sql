-- Named queries: each block starts with a line "-- name: <name>" and runs until the next one.
-- Python uses them by name (gateway.sqlfiles.QUERIES["..."]); no SQL text lives in Python.

-- name: server_version_num
SELECT current_setting('server_version_num')::int;

-- name: migrations_lock
SELECT pg_advisory_lock(hashtext('audience-gateway:migrations'));

-- name: migrations_unlock
SELECT pg_advisory_unlock(hashtext('audience-gateway:migrations'));

-- name: migrations_create_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO schema_migrations (version) VALUES ($1);

-- name: migrations_latest
SELECT max(version) FROM schema_migrations;

-- name: key_by_lookup_id
SELECT k.id, k.endpoint_id, k.secret_hash, k.scope, k.expires_at, k.revoked_at, e.name AS endpoint_name
FROM api_keys k JOIN endpoints e ON e.id = k.endpoint_id
WHERE k.lookup_id = $1;

-- name: key_insert
-- $7: made from GATEWAY_API_KEY (see key_bootstrap_retire).
INSERT INTO api_keys (endpoint_id, lookup_id, secret_hash, scope, label, expires_at, bootstrap)
VALUES ((SELECT id FROM endpoints WHERE name = $1), $2, $3, $4, $5, $6, $7)
ON CONFLICT (lookup_id) DO NOTHING
RETURNING id;

-- name: key_bootstrap_retire
-- The keys earlier values of GATEWAY_API_KEY made, revoked at a start with another value ($1: its lookup_id).
UPDATE api_keys SET revoked_at = now()
WHERE bootstrap AND revoked_at IS NULL AND lookup_id <> $1
RETURNING id, lookup_id;

-- name: key_bootstrap_revoked
-- Whether the key GATEWAY_API_KEY names was revoked (it then authenticates nothing).
SELECT revoked_at IS NOT NULL FROM api_keys WHERE lookup_id = $1;

-- name: key_count
SELECT count(*) FROM api_keys;

-- name: key_bootstrap_lock
SELECT pg_advisory_xact_lock(hashtext('audience-gateway:bootstrap-key'));

-- name: segment_insert
-- $6: identityHashing (NULL: identities stored as sent). The NOTIFY (at commit) tells every process's
-- segment-list cache (gateway.audience.segment_lists) that the endpoint's list changed.
WITH segment AS (
    INSERT INTO segments (endpoint_id, name, description, category, type, identity_hashing)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id, endpoint_id
)
SELECT segment.id, pg_notify('audience_gateway_segments', segment.endpoint_id::text) FROM segment;

-- name: segment_list
-- Inactive and deleted segments are not listed to Exchange.
SELECT id, name, type FROM segments
WHERE endpoint_id = $1 AND status = 'active'
ORDER BY id;

-- name: segment_get
SELECT id, name, description, category, type, status, identity_attribute, attributes, member_count,
       last_upload_at, created_at, updated_at, identity_hashing,
       EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id) AS read_only
FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted';

-- name: idempotency_claim
INSERT INTO idempotency_keys (endpoint_id, key, request_hash)
VALUES ($1, $2, $3)
ON CONFLICT (endpoint_id, key) DO NOTHING
RETURNING true;

-- name: idempotency_get
SELECT request_hash, response, created_at > now() - interval '24 hours' AS fresh
FROM idempotency_keys
WHERE endpoint_id = $1 AND key = $2
FOR UPDATE;

-- name: idempotency_restart
UPDATE idempotency_keys SET request_hash = $3, response = NULL, created_at = now()
WHERE endpoint_id = $1 AND key = $2;

-- name: idempotency_store
UPDATE idempotency_keys SET response = $3
WHERE endpoint_id = $1 AND key = $2;

-- name: endpoint_create
INSERT INTO endpoints (name) VALUES ($1)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING id;

-- ---------------------------------------------------------------------------------------------------
-- Segment metadata (/api routes, segments CLI): every status, deleted ones included. Change times are
-- clock_timestamp() under the segment's row lock (see gateway.changefeed).

-- name: clock_now
SELECT clock_timestamp();

-- name: change_feed_declare
-- The first statement of a transaction that writes change times of endpoint $1's segments and of no other
-- endpoint's (gateway.changefeed.declare_writes): a shared advisory lock, visible in pg_locks until the
-- transaction ends, released only after its commit is visible. The lock's second key is the endpoint id
-- modulo 2^31 (two endpoints sharing it only hold each other back).
SELECT pg_advisory_xact_lock_shared(hashtext('audience-gateway:change-feed'), ($1::bigint % 2147483648)::integer);

-- name: change_feed_watermark
-- $1: clock_timestamp() read by an earlier statement; $2: the endpoint whose feed it is. The transactions of
-- this role that may hold a change of $2 not yet visible: those that declared $2 (change_feed_declare), and
-- those holding a transaction id that declared no endpoint (they may write any). Every change of theirs is
-- no earlier than its transaction's start; so each change of $2 before the result is committed and visible
-- to any later snapshot.
WITH declared AS MATERIALIZED (
    SELECT pid, objid::bigint AS endpoint_key FROM pg_locks
    WHERE locktype = 'advisory' AND classid = hashtext('audience-gateway:change-feed')::oid AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT least($1::timestamptz, min(coalesce(xact_start, backend_start, '-infinity'))) - interval '1 microsecond'
FROM pg_stat_activity
WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()
  AND CASE WHEN pid IN (SELECT pid FROM declared)
           THEN pid IN (SELECT pid FROM declared WHERE endpoint_key = $2::bigint % 2147483648)
           ELSE backend_xid IS NOT NULL END;

-- name: meta_segment_page
-- Keyset page in id order; NULL filters are off. $4: a substring of the name or description (any case).
SELECT s.*, e.name AS endpoint_name FROM segments s JOIN endpoints e ON e.id = s.endpoint_id
WHERE s.endpoint_id = $1
  AND ($2::text IS NULL OR s.status = $2)
  AND ($3::text IS NULL OR s.type = $3)
  AND ($4::text IS NULL OR strpos(lower(s.name), lower($4)) > 0 OR strpos(lower(s.description), lower($4)) > 0)
  AND ($5::timestamptz IS NULL OR s.updated_at > $5)
  AND s.id > $6
ORDER BY s.id
LIMIT $7;

-- name: meta_mapping_page
SELECT s.id, s.name, s.description, s.status, s.metadata_updated_at FROM segments s
WHERE s.endpoint_id = $1
  AND ($2::timestamptz IS NULL OR s.metadata_updated_at > $2)
  AND s.id > $3
ORDER BY s.id
LIMIT $4;

-- name: meta_all_segments
-- $1: an endpoint name, or NULL for all.
SELECT s.*, e.name AS endpoint_name FROM segments s JOIN endpoints e ON e.id = s.endpoint_id
WHERE $1::text IS NULL OR e.name = $1
ORDER BY s.id;

-- name: meta_segment_get
SELECT s.*, e.name AS endpoint_name FROM segments s JOIN endpoints e ON e.id = s.endpoint_id
WHERE s.id = $1 AND s.endpoint_id = $2;

-- name: meta_segment_lock
-- $2 NULL: whatever its endpoint (the CLI).
SELECT s.*, e.name AS endpoint_name FROM segments s JOIN endpoints e ON e.id = s.endpoint_id
WHERE s.id = $1 AND ($2::bigint IS NULL OR s.endpoint_id = $2)
FOR NO KEY UPDATE OF s;

-- name: meta_segment_update
-- Under meta_segment_lock. Leaving 'deleted' clears deleted_at; entering it starts the grace period.
-- The NOTIFY: as segment_insert's (a rename or status change changes the list).
WITH segment AS (
    UPDATE segments SET name = $2, description = $3, category = $4, status = $5,
                        deleted_at = CASE WHEN $5 <> 'deleted' THEN NULL ELSE coalesce(deleted_at, clock_timestamp()) END,
                        updated_at = clock_timestamp(), metadata_updated_at = clock_timestamp()
    WHERE id = $1
    RETURNING endpoint_id
)
SELECT pg_notify('audience_gateway_segments', segment.endpoint_id::text) FROM segment;

-- name: meta_segment_insert
-- A segment created by import with its id; the identity sequence is moved past it (meta_segment_sequence).
-- The NOTIFY: as segment_insert's.
WITH segment AS (
    INSERT INTO segments (id, endpoint_id, name, description, category, type, status, identity_attribute,
                          attributes, identity_hashing, deleted_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $7 = 'deleted' THEN clock_timestamp() END)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, endpoint_id
)
SELECT segment.id, pg_notify('audience_gateway_segments', segment.endpoint_id::text) FROM segment;

-- name: meta_segment_sequence
-- Never backwards: a concurrent POST /v1/segments may hold a value above max(id), not yet committed.
SELECT setval(pg_get_serial_sequence('segments', 'id'),
              greatest((SELECT max(id) FROM segments),
                       pg_sequence_last_value(pg_get_serial_sequence('segments', 'id')::regclass), 1));

-- name: purge_candidates
SELECT id FROM segments
WHERE status = 'deleted' AND purged_at IS NULL AND deleted_at <= clock_timestamp() - make_interval(secs => $1)
ORDER BY deleted_at
LIMIT 100;

-- name: purge_lock
-- Waits for a push applying to it, a sync export or a job snapshot reading it (they lock the row too).
SELECT id FROM segments
WHERE id = $1 AND status = 'deleted' AND purged_at IS NULL
  AND deleted_at <= clock_timestamp() - make_interval(secs => $2)
FOR UPDATE;

-- name: purge_open_sessions
UPDATE replace_sessions SET status = 'expired', ended_at = now()
WHERE segment_id = $1 AND status = 'open'
RETURNING id;

-- name: purge_jobs
UPDATE jobs SET status = CASE WHEN status IN ('error', 'canceled') THEN status ELSE 'canceled' END,
                finished_at = coalesce(finished_at, now()), lease_owner = NULL, lease_expires_at = NULL,
                data_dropped_at = coalesce(data_dropped_at, now())
WHERE segment_id = $1
RETURNING id;

-- name: purge_mark
UPDATE segments SET member_count = 0, purged_at = clock_timestamp() WHERE id = $1;

-- ---------------------------------------------------------------------------------------------------
-- Members and pushes. {members} and {staging} are table names made by gateway.members from integer
-- ids only (audience.members_<segment id>, staging.replace_<session id>); never from request text.

-- name: segment_apply_exclusive
-- The segment's apply lock, exclusive (gateway.audience.segments.hold_segment): a REPLACE commit or session
-- opening, a push registering columns, a metadata change. Always taken before the segment's row lock; it
-- waits for the ADD and REMOVE batches applying (segment_apply_shared) and they wait for it. The second key
-- is the segment id modulo 2^31 (two segments sharing it only hold each other back).
SELECT pg_advisory_xact_lock(hashtext('audience-gateway:segment-apply'), ($1::bigint % 2147483648)::integer);

-- name: segment_apply_shared
-- ADD and REMOVE batches of one segment apply side by side: the row locks of its members order them
-- (each batch takes them in identity order), and its row only for the instant of segment_record_upload.
SELECT pg_advisory_xact_lock_shared(hashtext('audience-gateway:segment-apply'), ($1::bigint % 2147483648)::integer);

-- name: segment_lock
-- Under segment_apply_exclusive. NO KEY UPDATE: excludes other writers and the readers' FOR SHARE, but not
-- the foreign key checks (KEY SHARE) of rows that merely reference the segment (upload history, jobs).
SELECT identity_attribute, attributes, identity_hashing, member_count, status,
       EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id) AS read_only
FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted'
FOR NO KEY UPDATE;

-- name: segment_lock_shared
-- Under segment_apply_shared. KEY SHARE conflicts only with FOR UPDATE (the purge): batches holding it
-- still update the row's counts (segment_record_upload), one at a time, at their end.
SELECT identity_attribute, attributes, identity_hashing, member_count, status,
       EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id) AS read_only
FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted'
FOR KEY SHARE;

-- name: segment_apply_mode
-- Unlocked: whether an ADD or REMOVE may apply under the shared lock (its header registers nothing, and the
-- members table exists: CREATE TABLE IF NOT EXISTS is not safe side by side). $3: the members table.
SELECT identity_attribute, attributes, identity_hashing, to_regclass($3) IS NOT NULL AS members_exist FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted';

-- name: segment_columns
SELECT identity_attribute, attributes, identity_hashing FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted';

-- name: segment_set_columns
UPDATE segments SET identity_attribute = $2, attributes = $3, updated_at = clock_timestamp()
WHERE id = $1;

-- name: segment_record_upload
-- $3: whether the batch changed the membership (only then does the change feed see the segment move).
-- $4: the batch's upload history row (gateway.uploads), written by the same statement.
UPDATE segments SET member_count = member_count + $2, last_upload_at = now(),
                    updated_at = CASE WHEN $3 THEN clock_timestamp() ELSE updated_at END
FROM (SELECT record_upload($4::jsonb)) AS history
WHERE id = $1
RETURNING member_count;

-- name: segment_set_member_count
UPDATE segments SET member_count = $2, last_upload_at = now(), updated_at = clock_timestamp()
WHERE id = $1;

-- name: incoming_create
-- One text column per CSV column of this upload ({incoming_columns} = c0 …, cN); {identity} is the
-- identity column, {attrs} the ARRAY[…] expression that orders them as the segment's attributes.
CREATE TEMPORARY TABLE incoming (
    ord  integer NOT NULL,
    {incoming_columns}
) ON COMMIT DROP;

-- name: incoming_members_create
-- The rows of an ADD that gateway.ingest.apply.add_direct sent straight to the members table before it
-- stopped, and the rest of its body, in the members table's shape; ord numbers them in the body's order
-- (COPY keeps it), so that members_add's last-row-wins rule holds ({identity} = identity, {attrs} = attrs).
CREATE TEMPORARY TABLE incoming (
    identity  text COLLATE "C" NOT NULL,
    attrs     text[] NOT NULL,
    ord       bigint GENERATED ALWAYS AS IDENTITY
) ON COMMIT DROP;

-- name: endpoint_has_suppressions
SELECT EXISTS (SELECT 1 FROM suppressions WHERE endpoint_id = $1);

-- name: add_direct_lock_timeout
-- While an ADD's rows go straight into the members table (gateway.ingest.apply.add_direct), in identity
-- order only by chance: a wait for another batch's row ends this soon, and the batch is merged in identity
-- order instead. Below deadlock_timeout (1 s), so that such a wait never becomes a deadlock error.
SET LOCAL lock_timeout = '20ms';

-- name: lock_timeout_default
SET LOCAL lock_timeout TO DEFAULT;

-- name: incoming_identities
-- Only when another upload fixed the identity attribute while this body streamed (see lock_and_register):
-- the new identity column, read to be normalised in Python (gateway.ingest.upload.normalise_identity).
SELECT ord, {identity} AS identity FROM incoming;

-- name: incoming_set_identities
-- $1: ords, $2: their normalised identities (only those that changed).
UPDATE incoming SET {identity} = v.identity FROM unnest($1::integer[], $2::text[]) AS v(ord, identity)
WHERE incoming.ord = v.ord;

-- name: incoming_drop_empty_identity
DELETE FROM incoming WHERE {identity} = '' RETURNING *;

-- name: incoming_drop_suppressed
-- The rows whose identity is on endpoint $1's suppression list ({key}: the identity's form there, see
-- gateway.ingest.apply.suppression_key; {fields}: ARRAY[i.c0, …] in header order). The first condition does
-- not depend on the row: it is evaluated once, and an endpoint without suppressions never reads incoming
-- here. (Not RETURNING i.*: incoming is made again by each upload, and a cached statement returning its row
-- type would not survive that.)
DELETE FROM incoming i
WHERE EXISTS (SELECT 1 FROM suppressions WHERE endpoint_id = $1)
  AND EXISTS (SELECT 1 FROM suppressions s WHERE s.endpoint_id = $1 AND s.identity_sha256 = {key})
RETURNING i.ord, {fields} AS fields;

-- name: incoming_distinct_count
SELECT count(DISTINCT {identity}) FROM incoming;

-- name: members_create
CREATE TABLE IF NOT EXISTS {members} (
    identity  text COLLATE "C" PRIMARY KEY,
    attrs     text[] NOT NULL
);

-- name: members_insert_new
-- ADD's fast path (gateway.ingest.apply.add_members), in a savepoint: when every identity of the batch is
-- new, a plain INSERT (no speculative insertion: about 40 % cheaper than members_add) adds them all; the
-- first one that is a member already raises unique_violation, and members_add runs instead. The same rows,
-- the same identity order (so the same lock order) and the same last-row-wins rule as members_add.
INSERT INTO {members} (identity, attrs)
SELECT DISTINCT ON ({identity}) {identity}, {attrs} FROM incoming ORDER BY {identity}, ord DESC;

-- name: members_add
-- The last row of the batch wins for an identity sent twice; xmax = 0 marks rows that were inserted.
-- Rows are inserted, so locked, in identity order ("C", as members_remove): batches side by side that touch
-- the same identities wait for each other instead of deadlocking.
-- A member whose attributes are unchanged is not rewritten; every returned row is a change.
WITH merged AS (
    INSERT INTO {members} AS m (identity, attrs)
    SELECT DISTINCT ON ({identity}) {identity}, {attrs} FROM incoming ORDER BY {identity}, ord DESC
    ON CONFLICT (identity) DO UPDATE SET attrs = EXCLUDED.attrs WHERE m.attrs IS DISTINCT FROM EXCLUDED.attrs
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) AS changed FROM merged;

-- name: members_remove
-- The rows are locked in identity order first (as members_add takes them), so that batches touching the
-- same identities side by side wait for each other instead of deadlocking.
WITH doomed AS (
    SELECT m.identity FROM {members} m JOIN (SELECT DISTINCT {identity} AS identity FROM incoming) i
        ON m.identity = i.identity
    ORDER BY m.identity
    FOR UPDATE OF m
)
DELETE FROM {members} m USING doomed d
WHERE m.identity = d.identity;

-- name: replace_find_open
-- KEY SHARE: batches stage side by side, while a commit or an expiry (FOR UPDATE) waits for them to end;
-- a batch that waited for one finds no open session.
SELECT id FROM replace_sessions
WHERE segment_id = $1 AND total_batches = $2 AND ids = $3 AND source_endpoint_id = $4
  AND source_segment_id = $5 AND status = 'open'
FOR KEY SHARE;

-- name: replace_segment_columns
-- Unlocked: a batch whose header adds nothing to the segment stages without the segment's lock.
SELECT identity_attribute, attributes, identity_hashing, status,
       EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id) AS read_only
FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted';

-- name: replace_open
INSERT INTO replace_sessions (segment_id, total_batches, ids, source_endpoint_id, source_segment_id)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: staging_create
CREATE TABLE {staging} (
    batch     integer NOT NULL,
    ord       integer NOT NULL,
    identity  text COLLATE "C" NOT NULL,
    attrs     text[] NOT NULL
);

-- name: staging_clear_batch
-- What an earlier copy of batch $1 staged: rows written by another transaction (a batch COPYs its rows
-- straight into the staging table, in its own top-level transaction, before it learns it is a copy).
DELETE FROM {staging} WHERE batch = $1 AND xmin <> pg_current_xact_id()::xid;

-- name: staging_drop_suppressed
-- What this transaction staged as batch $2 whose identity is on endpoint $1's suppression list (as
-- incoming_drop_suppressed).
DELETE FROM {staging} t
WHERE EXISTS (SELECT 1 FROM suppressions WHERE endpoint_id = $1)
  AND t.batch = $2 AND t.xmin = pg_current_xact_id()::xid
  AND EXISTS (SELECT 1 FROM suppressions s WHERE s.endpoint_id = $1 AND s.identity_sha256 = {key})
RETURNING t.ord, t.identity, t.attrs;

-- name: staging_batch_distinct_count
-- The distinct identities this transaction staged as batch $1 (when too many to count in memory).
SELECT count(DISTINCT identity) FROM {staging} WHERE batch = $1 AND xmin = pg_current_xact_id()::xid;

-- name: staging_add_batch
INSERT INTO {staging} (batch, ord, identity, attrs)
SELECT $1, ord, {identity}, {attrs} FROM incoming;

-- name: staging_drop
DROP TABLE IF EXISTS {staging};

-- name: replace_record_batch
-- The row lock on (session, k) orders two copies of batch k: the second waits for the first to end,
-- then finds its row (resent = true) and deletes what it staged.
INSERT INTO replace_batches AS b (session_id, batch_number)
VALUES ($1, $2)
ON CONFLICT (session_id, batch_number)
DO UPDATE SET staged_at = now()
RETURNING b.xmax <> 0 AS resent;

-- name: replace_touch
-- The session's last batch time moves only when the last touch is older than $2 seconds: concurrent
-- batches would queue on the row otherwise. $3: the batch's upload history row (gateway.uploads), written
-- here with its session; the batch that commits the share marks it later (upload_mark_committed).
WITH touched AS (
    UPDATE replace_sessions SET last_batch_at = now()
    WHERE id = $1 AND last_batch_at < now() - make_interval(secs => $2)
)
SELECT record_upload($3::jsonb || jsonb_build_object('replace_session_id', $1::bigint,
                                                     'replace_committed', false)) AS upload_id;

-- name: replace_progress
SELECT (SELECT count(*) FROM replace_batches WHERE session_id = $1) AS staged, total_batches
FROM replace_sessions WHERE id = $1 AND status = 'open';

-- name: replace_lock_for_commit
-- Under the segment's lock; waits for batches still staging into this session.
SELECT (SELECT count(*) FROM replace_batches WHERE session_id = $1) = total_batches AS complete
FROM replace_sessions WHERE id = $1 AND status = 'open'
FOR UPDATE;

-- name: replace_build_begin
SET LOCAL work_mem = '256MB';

-- name: replace_adopt_staging
-- When no identity repeats (the primary key then succeeds), the staging table becomes the new audience:
-- no copy. Dropping a column only hides it (the rows keep 8 bytes each until they are rewritten).
ALTER TABLE {staging} DROP COLUMN batch, DROP COLUMN ord, ADD CONSTRAINT {members_new_pkey} PRIMARY KEY (identity);

-- name: replace_adopt_staging_move
ALTER TABLE {staging} SET SCHEMA audience;

-- name: replace_adopt_staging_rename
ALTER TABLE {staging_moved} RENAME TO {members_new_name};

-- name: replace_count_members
SELECT count(*) FROM {members_new};

-- name: replace_build_members
-- The new audience when identities repeat: the union of the staged batches; a later batch (then row) wins.
CREATE TABLE {members_new} AS
SELECT DISTINCT ON (identity) identity, attrs FROM {staging}
ORDER BY identity, batch DESC, ord DESC;

-- name: replace_index_members
ALTER TABLE {members_new} ADD CONSTRAINT {members_new_pkey} PRIMARY KEY (identity),
    ALTER COLUMN attrs SET NOT NULL;

-- name: replace_drop_members
DROP TABLE IF EXISTS {members};

-- name: replace_swap_members
ALTER TABLE {members_new} RENAME TO {members_name};

-- name: replace_rename_pkey
ALTER INDEX {members_new_pkey_qualified} RENAME TO {members_pkey};

-- name: replace_mark_committed
UPDATE replace_sessions SET status = 'committed', ended_at = now() WHERE id = $1;

-- name: replace_expired_sessions
SELECT id, segment_id FROM replace_sessions
WHERE status = 'open' AND last_batch_at < now() - make_interval(secs => $1)
ORDER BY id
LIMIT 100;

-- name: replace_lock_session_for_expiry
-- Under the segment's lock, so no batch of this session is being staged meanwhile. SKIP LOCKED: a session
-- a batch is streaming into (KEY SHARE, held while its body arrives) is not idle, and a busy segment is
-- tried again at the next sweep; the sweep never waits, holding the segment's lock, behind a slow body.
SELECT s.id FROM replace_sessions s JOIN segments g ON g.id = s.segment_id
WHERE s.id = $1 AND s.status = 'open' AND s.last_batch_at < now() - make_interval(secs => $2)
FOR NO KEY UPDATE OF g FOR UPDATE OF s SKIP LOCKED;

-- name: replace_mark_expired
UPDATE replace_sessions SET status = 'expired', ended_at = now() WHERE id = $1;

-- name: replace_forget_old
-- Committed and expired sessions are kept one TTL after they end, then forgotten.
DELETE FROM replace_sessions
WHERE status <> 'open' AND ended_at < now() - make_interval(secs => $1);

-- ---------------------------------------------------------------------------------------------------
-- Pulls: segment data and export jobs. {columns} is attrs[1], …, attrs[n] (n = the number of
-- attributes), {export_table} is exports.job_<job id>; both made from integers only.

-- name: export_segment_rows
SELECT {columns} FROM {members}

-- name: export_segment_rows_where
-- export_segment_rows of the members that satisfy {predicate} (gateway.segmentation.compiler, over p).
SELECT {columns} FROM {members} p WHERE {predicate}

-- name: export_segment_ndjson_where
SELECT json_object($1::text[], ARRAY[{columns}]::text[]) FROM {members} p WHERE {predicate}

-- name: export_segment_ndjson
-- One JSON object per member: attribute name ($1, in order) → value (null where the member has none).
-- Copied out as CSV with a delimiter and a quote no JSON text holds (json escapes every control character),
-- so each row is the object's text as it is, then a newline.
SELECT json_object($1::text[], ARRAY[{columns}]::text[]) FROM {members}

-- name: export_job_rows
SELECT {columns} FROM {export_table}

-- name: export_job_scan_in_order
-- A job's download must be the same bytes every time (byte ranges resume it, its length is stored once):
-- the snapshot table never changes, so a plain sequential scan from its first block, without parallel
-- workers, yields its rows in the same order each time. (synchronize_seqscans would let a scan start where
-- another concurrent one is; parallel workers would interleave their blocks.)
SET LOCAL synchronize_seqscans = off;
SET LOCAL max_parallel_workers_per_gather = 0;

-- name: segment_export_info
-- FOR SHARE: waits for a push applying to the segment (a REPLACE swapping its table) and keeps the next
-- one from starting until this transaction ends; the COPY that follows then gets a snapshot taken after
-- that wait. (A statement's snapshot is taken before it waits for a table lock: a COPY alone that waited
-- for a swap would read the new table as empty.)
SELECT attributes, member_count FROM segments
WHERE id = $1 AND endpoint_id = $2 AND status <> 'deleted'
FOR SHARE;

-- name: job_insert
-- Any kind of job (gateway.jobs.queue); the NOTIFY wakes the workers of every process.
WITH job AS (
    INSERT INTO jobs (kind, endpoint_id, segment_id) VALUES ($1, $2, $3)
    RETURNING id, data_id
)
SELECT job.id, job.data_id, pg_notify('audience_gateway_jobs', job.id::text) FROM job;

-- name: job_get
-- A job of kind $3 of endpoint $2; none once its segment is deleted.
SELECT id, data_id, segment_id, status, reason, row_count, created_at, started_at, finished_at, expires_at,
       expires_at IS NOT NULL AND expires_at <= now() AS expired, attributes, data_dropped_at, data_bytes,
       data_erasures, data_file
FROM jobs
WHERE id = $1 AND endpoint_id = $2 AND kind = $3
  AND (segment_id IS NULL OR EXISTS (SELECT 1 FROM segments s WHERE s.id = jobs.segment_id AND s.status <> 'deleted'));

-- name: job_claim
-- The oldest waiting job of the kinds $4 this process runs, or a running one whose worker stopped renewing
-- its lease.
UPDATE jobs SET status = 'running', lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2),
                attempts = attempts + 1, started_at = coalesce(started_at, now())
WHERE id = (
    SELECT id FROM jobs
    WHERE (status = 'waiting' OR (status = 'running' AND lease_expires_at < now() AND attempts < $3))
      AND kind = ANY($4::text[])
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, kind, endpoint_id, segment_id, attempts;

-- name: job_heartbeat
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING id;

-- name: job_complete
-- Only while this worker still holds the job (not canceled, lease not taken over).
UPDATE jobs SET status = 'complete', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING id;

-- name: job_fail
UPDATE jobs SET status = 'error', reason = $3, finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING id;

-- name: job_cancel
-- A job of kind $3 of endpoint $2 that has not ended in error or been canceled; none once its segment is deleted.
UPDATE jobs SET status = 'canceled', finished_at = coalesce(finished_at, now()), lease_owner = NULL,
                lease_expires_at = NULL
WHERE id = $1 AND endpoint_id = $2 AND kind = $3 AND status IN ('waiting', 'running', 'complete')
  AND (segment_id IS NULL OR EXISTS (SELECT 1 FROM segments s WHERE s.id = jobs.segment_id AND s.status <> 'deleted'))
RETURNING id;

-- name: jobs_release
-- A stopping worker hands its running jobs back (they are claimable again at once).
UPDATE jobs SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = $1 AND status = 'running';

-- name: jobs_give_up
UPDATE jobs SET status = 'error', reason = format('its worker stopped %s times; giving up', attempts),
                finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at < now() AND attempts >= $1;

-- Export jobs (gateway.jobs.exports): the snapshot of a segment's audience, its data and its expiry.

-- name: job_segment_columns
-- FOR SHARE, as in segment_export_info: the snapshot that follows sees a whole audience.
SELECT attributes FROM segments WHERE id = $1 FOR SHARE;

-- name: job_snapshot_drop
DROP TABLE IF EXISTS {export_table};

-- name: job_snapshot_copy
CREATE TABLE {export_table} AS SELECT attrs FROM {members};

-- name: job_snapshot_empty
CREATE TABLE {export_table} (attrs text[]);

-- name: job_members_exist
SELECT to_regclass($1) IS NOT NULL;

-- name: export_job_result
-- In the transaction of job_complete: the snapshot's file $5 (in the export directory) of $6 bytes.
UPDATE jobs SET attributes = $2, row_count = $3, expires_at = now() + make_interval(secs => $4), data_file = $5,
                data_bytes = $6
WHERE id = $1;

-- name: export_job_running
-- While this worker ($2, attempt $3) still holds the job: none when it was canceled or taken over.
SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running';

-- name: export_job_file
SELECT data_file FROM jobs WHERE id = $1;

-- name: export_job_file_states
-- For the sweep of the export directory: as export_file_states, for /v1 export jobs' snapshot files.
SELECT id, attempts, data_file AS file_name,
       status = 'complete' AND data_dropped_at IS NULL AND (expires_at IS NULL OR expires_at > now()) AS keeps_file,
       status = 'running' AND lease_expires_at > now() AS writing
FROM jobs
WHERE id = ANY($1::bigint[]) AND kind = $2;

-- name: export_job_lock_version
-- An erasure about to rewrite the job's snapshot file $2: the job's data version, if it still names that file
-- (locked until the rewrite is recorded: a second erasure waits, then finds the new name).
SELECT data_erasures FROM jobs
WHERE id = $1 AND data_file = $2 AND status = 'complete' AND data_dropped_at IS NULL
FOR UPDATE;

-- name: export_job_file_erased
-- The job's snapshot file $2 rewritten without $3 erased rows ($4 bytes now), if it still names the file
-- $5 that was rewritten: a new version of its data (another ETag).
UPDATE jobs SET data_file = $2, row_count = row_count - $3, data_bytes = $4, data_erasures = data_erasures + 1
WHERE id = $1 AND data_file = $5 AND status = 'complete' AND data_dropped_at IS NULL
RETURNING id;

-- name: job_store_data_bytes
-- The download's exact length, learnt lazily: from a full download that streamed to its end, or measured
-- for the first range request. Every download of one version of the data ($3: how many erasures shortened
-- it) is the same bytes, so the first value stored stays; a download of an older version stores nothing.
UPDATE jobs SET data_bytes = $2 WHERE id = $1 AND data_bytes IS NULL AND data_erasures = $3;

-- name: job_data_version
-- In a download's snapshot: the version of the data it streams (how many erasures shortened it).
SELECT data_erasures FROM jobs WHERE id = $1;

-- name: jobs_expired_data
-- Export jobs ($1: their kind) whose data expired or that were canceled, and whose snapshot is still there.
SELECT id FROM jobs
WHERE kind = $1 AND data_dropped_at IS NULL AND (expires_at <= now() OR status = 'canceled')
ORDER BY id
LIMIT 100;

-- name: job_mark_dropped
UPDATE jobs SET data_dropped_at = now() WHERE id = $1;

-- Export jobs to files (gateway.jobs.export_files): jobs of kind 'ExportFile' and their export_files row.

-- name: export_file_insert
INSERT INTO export_files (job_id, fields, format, expression) VALUES ($1, $2, $3, $4);

-- name: export_file_get
-- The endpoint's export file job $1 ($3: the kind); none once its segment is deleted.
SELECT j.id, j.segment_id, j.status, j.reason, j.row_count, j.created_at, j.started_at, j.finished_at,
       j.expires_at, j.expires_at IS NOT NULL AND j.expires_at <= now() AS expired, j.data_dropped_at,
       f.fields, f.format, f.expression, f.progress, f.file_name, f.bytes, f.sha256, f.erased_by, f.erased_at,
       clock_timestamp() AS now
FROM jobs j JOIN export_files f ON f.job_id = j.id
WHERE j.id = $1 AND j.endpoint_id = $2 AND j.kind = $3
  AND EXISTS (SELECT 1 FROM segments s WHERE s.id = j.segment_id AND s.status <> 'deleted');

-- name: export_file_list
-- The endpoint's export file jobs ($2: the kind), newest first: those of status $3 (NULL: any), below id $4
-- (NULL: from the newest; the cursor), skipping $6 (the offset), at most $5.
SELECT j.id, j.segment_id, j.status, j.reason, j.row_count, j.created_at, j.started_at, j.finished_at,
       j.expires_at, j.expires_at IS NOT NULL AND j.expires_at <= now() AS expired, j.data_dropped_at,
       f.fields, f.format, f.expression, f.progress, f.file_name, f.bytes, f.sha256, f.erased_by, f.erased_at,
       clock_timestamp() AS now
FROM jobs j JOIN export_files f ON f.job_id = j.id
WHERE j.endpoint_id = $1 AND j.kind = $2 AND ($3::text IS NULL OR j.status = $3) AND ($4::bigint IS NULL OR j.id < $4)
  AND EXISTS (SELECT 1 FROM segments s WHERE s.id = j.segment_id AND s.status <> 'deleted')
ORDER BY j.id DESC
LIMIT $5 OFFSET $6;

-- name: export_file_task
-- What a claimed job is to write.
SELECT fields, format, expression FROM export_files WHERE job_id = $1;

-- name: in_segment_segments
-- What inSegment("…") may read (gateway.segmentation.insegment): the segments of endpoint $1 among the ids
-- $2 (any type, not deleted; another endpoint's is absent), how each stores identities, and whether it has
-- a members table (a segment nothing was ever pushed to has none).
SELECT id, identity_hashing, to_regclass(format('audience.%I', 'members_' || id)) IS NOT NULL AS has_members
FROM segments WHERE endpoint_id = $1 AND id = any($2::bigint[]) AND status <> 'deleted';

-- name: no_members
-- What inSegment reads for a segment nothing was ever pushed to: no member.
(SELECT NULL::text AS identity WHERE false)

-- name: segmentation_share_lock
-- The first statement of a snapshot that reads segments' members (gateway.segmentation.insegment): the
-- rows of endpoint $1's sources $2 (NULL: "*", every segment of the types $4) and of the segments $3
-- inSegment reads, FOR SHARE. A REPLACE commit, which swaps a members table for a new one this snapshot
-- cannot see, takes the row's lock: it waits for this transaction to end; one that committed after the
-- snapshot makes this lock fail (could not serialize) and the reader starts again. The rows are locked in
-- the order an erasure locks them (privacy_erase_segments: definitions' audiences last), so that the two
-- never deadlock.
SELECT id FROM segments
WHERE endpoint_id = $1 AND status <> 'deleted'
  AND (id = any($2::bigint[]) OR id = any($3::bigint[]) OR ($2::bigint[] IS NULL AND type = any($4::text[])))
ORDER BY EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id), id
FOR SHARE;

-- name: export_file_progress
-- Rows written so far, while this worker ($2, attempt $3) still holds the job: none when it was canceled
-- or taken over (the writer then stops).
UPDATE export_files f SET progress = $4
FROM jobs j
WHERE f.job_id = $1 AND j.id = f.job_id AND j.lease_owner = $2 AND j.attempts = $3 AND j.status = 'running'
RETURNING f.job_id;

-- name: export_file_result
-- In the transaction of job_complete.
WITH file AS (
    UPDATE export_files SET progress = $2, file_name = $3, bytes = $4, sha256 = $5 WHERE job_id = $1
)
UPDATE jobs SET row_count = $2, expires_at = now() + make_interval(secs => $6) WHERE id = $1;

-- name: export_file_erased_by
-- In the snapshot, after segment_export_info: the last erasure that went over the segment.
SELECT erased_by FROM segments WHERE id = $1;

-- name: export_file_erasure_check
-- In the completing transaction: the last erasure of the segment (waits for one that is erasing it).
SELECT erased_by FROM segments WHERE id = $1 FOR SHARE;

-- name: export_file_erased
-- The file of completed job $1 removed by erasure $2: its download answers 410. None if it was already gone
-- (canceled, expired, erased).
WITH job AS (
    UPDATE jobs SET data_dropped_at = now() WHERE id = $1 AND data_dropped_at IS NULL RETURNING id
)
UPDATE export_files f SET erased_by = $2, erased_at = now() FROM job WHERE f.job_id = job.id
RETURNING f.job_id;

-- name: export_file_name
-- The file a job recorded (NULL if none), for the discard at cancel or expiry.
SELECT file_name FROM export_files WHERE job_id = $1;

-- name: export_file_states
-- For the sweep of the export directory: the jobs ($2: the kind) whose ids appear in its file names, and
-- whether each still wants its file (a completed job's, unexpired, not dropped) or its temp file (a running
-- job's current attempt, whose lease is live).
SELECT j.id, j.attempts, f.file_name,
       j.status = 'complete' AND j.data_dropped_at IS NULL
           AND (j.expires_at IS NULL OR j.expires_at > now()) AS keeps_file,
       j.status = 'running' AND j.lease_expires_at > now() AS writing
FROM jobs j JOIN export_files f ON f.job_id = j.id
WHERE j.id = ANY($1::bigint[]) AND j.kind = $2;

-- ---------------------------------------------------------------------------------------------------
-- Endpoints and API keys, managed from the command line (gateway.admin_cli).

-- name: endpoint_insert
INSERT INTO endpoints (name) VALUES ($1)
ON CONFLICT (name) DO NOTHING
RETURNING id;

-- name: endpoint_list
SELECT e.id, e.name, e.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.endpoint_id = e.id AND k.revoked_at IS NULL) AS active_keys,
       (SELECT count(*) FROM segments s WHERE s.endpoint_id = e.id AND s.status <> 'deleted') AS segments
FROM endpoints e
ORDER BY e.id;

-- name: endpoint_id
SELECT id FROM endpoints WHERE name = $1;

-- name: key_list
-- $1: an endpoint name, or NULL for all. Never selects secret_hash.
SELECT k.id, e.name AS endpoint_name, k.scope, k.label, k.created_at, k.last_used_at, k.expires_at,
       k.revoked_at
FROM api_keys k JOIN endpoints e ON e.id = k.endpoint_id
WHERE $1::text IS NULL OR e.name = $1
ORDER BY k.id;

-- name: key_revoke
-- Idempotent: a key revoked before keeps its first revocation time.
UPDATE api_keys k SET revoked_at = coalesce(k.revoked_at, now())
FROM endpoints e
WHERE k.id = $1 AND e.id = k.endpoint_id
RETURNING k.id, k.lookup_id, e.name AS endpoint_name, k.scope, k.revoked_at;

-- name: key_notify
SELECT pg_notify($1, $2);

-- name: key_touch_last_used
-- Flushed from memory (gateway.keycache): $1 key ids, $2 the last time each was used.
UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.used_at)
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, used_at)
WHERE k.id = u.id;

-- name: metrics_jobs_by_status
-- Read at scrape time (gateway.metrics): the database is the truth shared by every gateway process.
SELECT status, count(*) AS jobs FROM jobs GROUP BY status;

-- name: metrics_open_replace_sessions
SELECT count(*) FROM replace_sessions WHERE status = 'open';

-- ---------------------------------------------------------------------------------------------------
-- Upload history and rejected rows (gateway.uploads, gateway.rejects).

-- name: upload_reserve
-- An upload's id, taken when its first rejected rows are stored, and the rejects its segment ($1) and its
-- endpoint ($2) hold (the conditions match the partial index uploads_rejects_held_idx).
SELECT nextval('uploads_id_seq') AS id,
       (SELECT coalesce(sum(rejects_stored), 0) FROM uploads
        WHERE segment_id = $1 AND rejects_expired_at IS NULL AND rejects_stored > 0)::bigint AS segment_rejects,
       (SELECT coalesce(sum(u.rejects_stored), 0) FROM segments s JOIN uploads u ON u.segment_id = s.id
        WHERE s.endpoint_id = $2 AND u.rejects_expired_at IS NULL AND u.rejects_stored > 0)::bigint
           AS endpoint_rejects;

-- name: upload_list
-- Newest first; $2 is the cursor (only ids below it), $3 the page size.
SELECT id, method, total_batches, batch_number, replace_session_id, replace_committed, num_received,
       num_invalid, num_added, num_removed, rejects_stored, rejects_not_stored, rejects_expired_at, ids,
       category, source_endpoint_id, source_segment_id, request_id, started_at, duration_s, first_line
FROM uploads
WHERE segment_id = $1 AND id < $2
ORDER BY id DESC
LIMIT $3;

-- name: upload_get
SELECT u.id, u.rejects_stored, u.rejects_expired_at
FROM uploads u JOIN segments s ON s.id = u.segment_id
WHERE u.id = $1 AND u.segment_id = $2 AND s.endpoint_id = $3;

-- name: upload_rejects_rows
SELECT line, reason, raw FROM upload_rejects WHERE upload_id = $1 ORDER BY line

-- name: upload_share_summary
-- The uploads of segment $1 (endpoint $2) of one share: replace session $3 or sourceSegmentID $4 (the
-- other NULL); how many there are, how many lost their rejects to GATEWAY_REJECTS_TTL, and the rejects
-- they only counted (over a cap).
SELECT count(*) AS uploads,
       count(*) FILTER (WHERE u.rejects_expired_at IS NOT NULL) AS expired,
       coalesce(sum(u.rejects_not_stored), 0)::bigint AS not_stored
FROM uploads u JOIN segments s ON s.id = u.segment_id
WHERE u.segment_id = $1 AND s.endpoint_id = $2 AND (u.replace_session_id = $3 OR u.source_segment_id = $4);

-- name: upload_share_rejects_rows
-- The stored rejects of those uploads (as upload_share_summary picks them), by line, then upload.
SELECT r.line, r.reason, r.raw, r.upload_id
FROM uploads u JOIN upload_rejects r ON r.upload_id = u.id
WHERE u.segment_id = $1 AND (u.replace_session_id = $2 OR u.source_segment_id = $3)
  AND u.rejects_expired_at IS NULL
ORDER BY r.line, r.upload_id

-- name: uploads_expire_rejects
-- The rejects of uploads older than GATEWAY_REJECTS_TTL ($1 seconds), $2 uploads at a time.
WITH expired AS (
    UPDATE uploads SET rejects_expired_at = now()
    WHERE id IN (SELECT id FROM uploads
                 WHERE rejects_expired_at IS NULL AND started_at < now() - make_interval(secs => $1)
                 ORDER BY started_at LIMIT $2)
    RETURNING id
), dropped AS (
    DELETE FROM upload_rejects r USING expired WHERE r.upload_id = expired.id
)
SELECT count(*) FROM expired;

-- name: uploads_forget_old
-- History older than GATEWAY_UPLOAD_HISTORY_TTL ($1 seconds); the trigger drops any rejects left.
DELETE FROM uploads WHERE started_at < now() - make_interval(secs => $1);

-- name: upload_mark_committed
UPDATE uploads SET replace_committed = true WHERE id = $1;

-- ---------------------------------------------------------------------------------------------------
-- Segmentation (gateway.segmentation).

-- name: segmentation_sources
-- The segments a definition may read ($2: ids, or NULL for "*"), with what decides whether it may:
-- another endpoint's segment is simply absent.
SELECT id, type, status, identity_attribute, attributes, identity_hashing
FROM segments
WHERE endpoint_id = $1 AND status <> 'deleted'
  AND ($2::bigint[] IS NULL OR id = ANY ($2::bigint[]))
ORDER BY id;

-- Segment definitions (gateway.segmentation.definitions). A deleted definition (deleted_at) is answered
-- like a missing one; another endpoint's is simply absent.

-- name: definition_audience_insert
-- A definition's audience: a Queries segment whose columns are its sources' merged profile attributes,
-- its identities hashed as theirs are.
-- The NOTIFY: as segment_insert's.
WITH segment AS (
    INSERT INTO segments (endpoint_id, name, description, type, identity_attribute, attributes, identity_hashing)
    VALUES ($1, $2, $3, 'Queries', $4, $5, $6)
    RETURNING id, endpoint_id
)
SELECT segment.id, pg_notify('audience_gateway_segments', segment.endpoint_id::text) FROM segment;

-- name: definition_insert
INSERT INTO segment_definitions (endpoint_id, name, name_key, description, expression, sources, batch_enabled,
                                 audience_segment_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *;

-- name: definition_get
SELECT * FROM segment_definitions WHERE id = $1 AND endpoint_id = $2 AND deleted_at IS NULL;

-- name: definition_lock
SELECT * FROM segment_definitions WHERE id = $1 AND endpoint_id = $2 AND deleted_at IS NULL
FOR UPDATE;

-- name: definition_many
SELECT * FROM segment_definitions WHERE id = ANY ($1::bigint[]) AND endpoint_id = $2 AND deleted_at IS NULL;

-- name: definition_sort_keys
-- What a list sorts on, for every live definition of endpoint $1 whose folded name contains $2 (NULL: all).
SELECT id, name_key, created_at, updated_at FROM segment_definitions
WHERE endpoint_id = $1 AND deleted_at IS NULL AND ($2::text IS NULL OR strpos(name_key, $2) > 0);

-- name: definition_update
-- Under definition_lock.
UPDATE segment_definitions
SET name = $2, name_key = $3, description = $4, expression = $5, sources = $6, batch_enabled = $7,
    updated_at = clock_timestamp()
WHERE id = $1
RETURNING *;

-- name: definition_delete
-- Under definition_lock.
UPDATE segment_definitions SET deleted_at = clock_timestamp() WHERE id = $1
RETURNING *;

-- Schedules of segment jobs (gateway.segmentation.schedules). Another endpoint's schedule is absent.

-- name: schedule_insert
INSERT INTO schedules (endpoint_id, name, segments, schedule, state, next_run_at)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: schedule_get
SELECT * FROM schedules WHERE id = $1 AND endpoint_id = $2;

-- name: schedule_lock
SELECT * FROM schedules WHERE id = $1 AND endpoint_id = $2
FOR UPDATE;

-- name: schedule_update
-- Under schedule_lock.
UPDATE schedules SET name = $2, segments = $3, schedule = $4, state = $5, next_run_at = $6,
                     updated_at = clock_timestamp()
WHERE id = $1
RETURNING *;

-- name: schedule_delete
DELETE FROM schedules WHERE id = $1 AND endpoint_id = $2
RETURNING *;

-- name: schedule_page
SELECT * FROM schedules WHERE endpoint_id = $1 ORDER BY id OFFSET $2 LIMIT $3;

-- name: schedule_count
SELECT count(*) FROM schedules WHERE endpoint_id = $1;

-- name: schedule_claim_due
-- Active schedules due by the transaction's start, $1 at most, locked until it ends; rows another
-- process holds are skipped (it is running them), so each due time makes one job.
SELECT id, endpoint_id, segments, schedule FROM schedules
WHERE state = 'active' AND next_run_at <= now()
ORDER BY next_run_at
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: schedule_ran
-- Under schedule_claim_due: the job it made and its next due time (NULL: the cron has no later time).
UPDATE schedules SET next_run_at = $2, last_job_id = $3 WHERE id = $1;

-- ---------------------------------------------------------------------------------------------------
-- Segment jobs (gateway.segmentation.segment_jobs, .evaluate): rows of jobs of kind 'SegmentJob' (no
-- segment_id) with a row of segment_jobs each.

-- name: segment_job_insert
INSERT INTO segment_jobs (job_id, all_definitions, definition_ids, source, schedule_id)
VALUES ($1, $2, $3, $4, $5);

-- name: segment_job_get
-- The endpoint's segment job $1 ($3: the kind's name).
SELECT j.id, j.status, j.reason, j.attempts, j.created_at, j.started_at, j.finished_at,
       greatest(j.created_at, j.started_at, j.finished_at) AS updated_at,
       s.all_definitions, s.definition_ids, s.source, s.schedule_id, s.metrics, s.errors
FROM jobs j JOIN segment_jobs s ON s.job_id = j.id
WHERE j.id = $1 AND j.endpoint_id = $2 AND j.kind = $3;

-- name: segment_job_page
-- The endpoint's segment jobs, newest first, $4 at a time after job id $5 (NULL: from the newest);
-- $3: queue statuses to keep (NULL: all). One more row than asked tells whether a next page exists.
SELECT j.id, j.status, j.reason, j.attempts, j.created_at, j.started_at, j.finished_at,
       greatest(j.created_at, j.started_at, j.finished_at) AS updated_at,
       s.all_definitions, s.definition_ids, s.source, s.schedule_id, s.metrics, s.errors
FROM jobs j JOIN segment_jobs s ON s.job_id = j.id
WHERE j.endpoint_id = $1 AND j.kind = $2 AND ($3::text[] IS NULL OR j.status = ANY ($3::text[]))
  AND ($5::bigint IS NULL OR j.id < $5)
ORDER BY j.id DESC
LIMIT $4 + 1;

-- name: segment_job_count
SELECT count(*) FROM jobs j
WHERE j.endpoint_id = $1 AND j.kind = $2 AND ($3::text[] IS NULL OR j.status = ANY ($3::text[]));

-- name: segment_job_cancel
-- A segment job that has not ended: a worker running it stops at its next heartbeat, and whatever its
-- transaction built is rolled back (nothing of a segment job is committed before it completes).
UPDATE jobs SET status = 'canceled', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND endpoint_id = $2 AND kind = $3 AND status IN ('waiting', 'running')
RETURNING id;

-- name: segment_profiles
-- A definition's profiles (gateway.segmentation.profiles): {sources} are its sources' members tables
-- FULL JOINed by identity, {identity} their coalesced identity, {attrs} the merged attributes.
SELECT {identity} AS identity, {attrs} AS attrs FROM {sources}

-- name: segment_profiles_none
-- The profiles of sources that have no members table (nothing was ever pushed to them).
SELECT NULL::text COLLATE "C" AS identity, NULL::text[] AS attrs WHERE false

-- name: segment_job_spec
SELECT all_definitions, definition_ids FROM segment_jobs WHERE job_id = $1;

-- name: segment_job_definitions
-- The live definitions a job evaluates: $2 ids (NULL: every batch-enabled one of the endpoint).
SELECT id, expression, sources, audience_segment_id FROM segment_definitions
WHERE endpoint_id = $1 AND deleted_at IS NULL
  AND CASE WHEN $2::bigint[] IS NULL THEN batch_enabled ELSE id = ANY ($2::bigint[]) END
ORDER BY audience_segment_id;

-- name: segment_job_member_count
SELECT member_count FROM segments WHERE id = $1;

-- name: segment_job_count_profiles
SELECT count(*) FROM ({profiles}) AS p;

-- name: segment_job_build
-- A definition's new audience ({build}: staging.segjob_<job>_<attempt>_<definition>), index after the load.
CREATE TABLE {build} AS
SELECT p.identity COLLATE "C" AS identity, coalesce(p.attrs, '{{}}') AS attrs FROM ({profiles}) AS p
WHERE {predicate};

-- name: segment_job_index_build
ALTER TABLE {build} ADD CONSTRAINT {build_pkey} PRIMARY KEY (identity), ALTER COLUMN attrs SET NOT NULL;

-- name: segment_job_drop_build
DROP TABLE IF EXISTS {build};

-- name: segment_job_set_columns
-- A definition's audience at its swap: its sources' merged attributes and identity hashing.
UPDATE segments SET identity_attribute = $2, attributes = $3, identity_hashing = $4, updated_at = clock_timestamp()
WHERE id = $1;

-- name: segment_job_erased_by
-- The last erasure that went over the audience while a segment job ran (migration 0017): read by the build
-- in its snapshot, and again by the swap under the audience's apply lock.
SELECT erased_by FROM segments WHERE id = $1;

-- name: segment_job_leftover_builds
-- Build tables of segment jobs (or attempts) no longer running: a canceled, failed or taken-over attempt.
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'staging' AND c.relkind = 'r' AND c.relname ~ '^segjob_[0-9]+_[0-9]+_[0-9]+$'
  AND NOT EXISTS (SELECT 1 FROM jobs j
                  WHERE j.id = split_part(c.relname, '_', 2)::bigint AND j.status = 'running'
                    AND j.attempts = split_part(c.relname, '_', 3)::integer);

-- name: segment_job_compare
-- realized (new), existing (kept) and exited (dropped) members, the previous audience against the new.
SELECT count(*) FILTER (WHERE o.identity IS NULL) AS realized,
       count(*) FILTER (WHERE o.identity IS NOT NULL AND n.identity IS NOT NULL) AS existing,
       count(*) FILTER (WHERE n.identity IS NULL) AS exited
FROM {members} o FULL JOIN {build} n ON n.identity = o.identity;

-- name: segment_job_build_move
-- The built audience becomes audience.members_<id>_new (then replace_drop_members, replace_swap_members
-- and replace_rename_pkey swap it in, as a REPLACE commit does).
ALTER TABLE {build} SET SCHEMA audience;

-- name: segment_job_build_rename
ALTER TABLE {build_moved} RENAME TO {members_new_name};

-- name: segment_job_build_rename_pkey
ALTER INDEX {build_pkey_moved} RENAME TO {members_new_pkey};

-- name: segment_job_result
-- In the transaction of the swaps, with job_complete (or job_fail).
UPDATE segment_jobs SET metrics = $2, errors = $3 WHERE job_id = $1;

-- Privacy (gateway.privacy, gateway.jobs.erasure): erasure requests, their audit rows, the suppression list
-- and identity hashing.

-- name: privacy_request_insert
INSERT INTO privacy_requests (job_id, endpoint_id, request_id, key_id, suppress, received, invalid, invalid_samples)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb);

-- name: privacy_request_get
-- An erasure of endpoint $2 with its job's status and times.
SELECT r.*, j.status, j.reason, j.started_at, j.finished_at,
       (SELECT count(*) FROM privacy_request_identities i WHERE i.job_id = r.job_id) AS identities
FROM privacy_requests r JOIN jobs j ON j.id = r.job_id
WHERE r.job_id = $1 AND r.endpoint_id = $2;

-- name: privacy_request_page
-- Endpoint $1's erasures, newest first, ids below $2, $3 at a time; $4: only those that held this identity
-- hash (NULL: all).
SELECT r.*, j.status, j.reason, j.started_at, j.finished_at,
       (SELECT count(*) FROM privacy_request_identities i WHERE i.job_id = r.job_id) AS identities
FROM privacy_requests r JOIN jobs j ON j.id = r.job_id
WHERE r.endpoint_id = $1 AND r.job_id < $2
  AND ($4::text[] IS NULL OR EXISTS (SELECT 1 FROM privacy_request_identities i
                                     WHERE i.job_id = r.job_id AND i.identity_sha256 = ANY ($4::text[])))
ORDER BY r.job_id DESC
LIMIT $3;

-- name: privacy_erase_leftovers
-- The identities of erasures that ended without completing (error, canceled): nothing else reads them.
DELETE FROM privacy_erase_identities e USING jobs j
WHERE j.id = e.job_id AND j.status IN ('error', 'canceled');

-- name: privacy_erase_analyze
-- The erasure's identities were just loaded: statistics let the planner probe each members table's index.
ANALYZE privacy_erase_identities;

-- name: privacy_erase_segments
-- Every segment of endpoint $1 that may hold members: pushed and Queries audiences, inactive ones, and
-- deleted ones whose members are not purged yet. Definitions' audiences last: a segment job's swap that
-- sees an audience's erasure then sees its sources' too (migration 0017).
SELECT id, identity_attribute, identity_hashing FROM segments
WHERE endpoint_id = $1 AND purged_at IS NULL AND identity_attribute IS NOT NULL
ORDER BY EXISTS (SELECT 1 FROM segment_definitions d WHERE d.audience_segment_id = segments.id), id;

-- name: privacy_erase_segment
SELECT privacy_erase_segment($1, $2, $3);

-- name: privacy_erase_files
-- The export files (jobs of kind $2) of endpoint $1 an erasure searches: completed, not expired, not dropped.
SELECT j.id, j.segment_id, f.format, f.file_name, s.identity_attribute, s.identity_hashing
FROM jobs j JOIN export_files f ON f.job_id = j.id JOIN segments s ON s.id = j.segment_id
WHERE j.endpoint_id = $1 AND j.kind = $2 AND j.status = 'complete' AND j.data_dropped_at IS NULL
  AND (j.expires_at IS NULL OR j.expires_at > now()) AND f.file_name IS NOT NULL AND s.identity_attribute IS NOT NULL
ORDER BY j.id;

-- name: privacy_erase_snapshot_files
-- The snapshot files of endpoint $1's /v1 export jobs (kind $2) an erasure searches: completed, not expired,
-- not dropped, with an identity column.
SELECT j.id, j.segment_id, j.data_file AS file_name, s.identity_attribute, s.identity_hashing
FROM jobs j JOIN segments s ON s.id = j.segment_id
WHERE j.endpoint_id = $1 AND j.kind = $2 AND j.status = 'complete' AND j.data_dropped_at IS NULL
  AND (j.expires_at IS NULL OR j.expires_at > now()) AND j.data_file IS NOT NULL
  AND s.identity_attribute IS NOT NULL
ORDER BY j.id;

-- name: privacy_record_snapshots
-- $3 more rows of segment $2's export snapshots removed by erasure $1 (found[segment].snapshots).
UPDATE privacy_requests
SET found = jsonb_set(found, ARRAY[$2::text],
                      coalesce(found -> $2::text, '{"members": 0, "staged": 0, "snapshots": 0}'::jsonb)
                      || jsonb_build_object('snapshots', coalesce((found -> $2::text ->> 'snapshots')::bigint, 0) + $3))
WHERE job_id = $1;

-- name: privacy_erase_values
-- Erasure $1's identities in form $2 (a column of privacy_erase_identities), as a segment stores them.
SELECT DISTINCT CASE $2::text WHEN 'plain' THEN plain WHEN 'lowered' THEN lowered
                              WHEN 'plain_sha256' THEN plain_sha256 WHEN 'lowered_sha256' THEN lowered_sha256 END
FROM privacy_erase_identities WHERE job_id = $1;

-- name: privacy_request_found
SELECT found FROM privacy_requests WHERE job_id = $1;

-- name: privacy_record_files
-- $3 more export files of segment $2 removed by erasure $1 (found[segment].files).
UPDATE privacy_requests
SET found = jsonb_set(found, ARRAY[$2::text],
                      coalesce(found -> $2::text, '{"members": 0, "staged": 0, "snapshots": 0}'::jsonb)
                      || jsonb_build_object('files', coalesce((found -> $2::text ->> 'files')::bigint, 0) + $3))
WHERE job_id = $1;

-- name: privacy_record_found
-- $2: {"<segment id>": {...}} of the segments this transaction erased something from.
UPDATE privacy_requests SET found = found || $2::jsonb WHERE job_id = $1;

-- name: privacy_erase_rejects
-- The stored rejected rows of endpoint $1 whose raw text holds one of erasure $2's identities, in any of its
-- forms, as a field: the text is split at CSV separators and quotes and each piece looked up; an identity
-- holding such a character is searched for as a substring. ASCII letters compare in any case.
WITH tokens AS MATERIALIZED (
    SELECT DISTINCT lower(v.form COLLATE "C") AS token
    FROM privacy_erase_identities e,
         LATERAL (VALUES (e.plain), (e.lowered), (e.plain_sha256), (e.lowered_sha256)) AS v(form)
    WHERE e.job_id = $2
)
DELETE FROM upload_rejects r USING uploads u, segments s
WHERE r.upload_id = u.id AND u.segment_id = s.id AND s.endpoint_id = $1 AND u.rejects_expired_at IS NULL
  AND (EXISTS (SELECT 1 FROM regexp_split_to_table(lower(r.raw COLLATE "C"), '[,;|"''\t ]+') AS p(token)
               WHERE p.token IN (SELECT token FROM tokens))
       OR EXISTS (SELECT 1 FROM tokens t
                  WHERE t.token ~ '[,;|"''\t ]' AND strpos(lower(r.raw COLLATE "C"), t.token) > 0));

-- name: privacy_complete
-- In the erasure's last transaction: the SHA-256 of each identity kept for the audit, the identities dropped.
WITH audit AS (
    INSERT INTO privacy_request_identities (job_id, identity_sha256)
    SELECT DISTINCT $1::bigint, plain_sha256 FROM privacy_erase_identities WHERE job_id = $1
    ON CONFLICT DO NOTHING
), result AS (
    UPDATE privacy_requests SET rejects_erased = $2 WHERE job_id = $1
)
DELETE FROM privacy_erase_identities WHERE job_id = $1;

-- name: suppression_insert_erased
-- The identities of erasure $2 (with suppress) on endpoint $1's list: the hash of each as sent and lowered
-- (gateway.privacy.identities.identity_hashes).
INSERT INTO suppressions (endpoint_id, identity_sha256, job_id)
SELECT DISTINCT $1::bigint, lower(v.hash), $2::bigint
FROM privacy_erase_identities e, LATERAL (VALUES (e.plain_sha256), (e.lowered_sha256)) AS v(hash)
WHERE e.job_id = $2
ON CONFLICT (endpoint_id, identity_sha256) DO NOTHING;

-- name: suppression_page
SELECT identity_sha256, job_id, created_at FROM suppressions
WHERE endpoint_id = $1 AND identity_sha256 > $2
ORDER BY identity_sha256
LIMIT $3;

-- name: suppression_delete
DELETE FROM suppressions WHERE endpoint_id = $1 AND identity_sha256 = ANY ($2::text[]);

-- name: segment_hashing_lock
-- Under segment_apply_exclusive: the segment, whether it holds members or staged REPLACE batches.
SELECT identity_hashing, member_count > 0
           OR EXISTS (SELECT 1 FROM replace_sessions r WHERE r.segment_id = s.id AND r.status = 'open') AS holds_data
FROM segments s
WHERE id = $1 AND endpoint_id = $2
FOR NO KEY UPDATE;

-- name: segment_set_hashing
UPDATE segments SET identity_hashing = $2, updated_at = clock_timestamp(), metadata_updated_at = clock_timestamp()
WHERE id = $1;

-- Audiences (gateway.segmentation.audiences): a view over segments and their live definitions, never a copy.
-- Deleted segments are not audiences. A Queries segment shows its definition's name, description and
-- expression; its update time is the later of the two rows'.

-- name: audience_page
-- $2/$3: substrings of the name / description (any case), NULL: not filtered; $4: sort key (name,
-- creationTime, updateTime, totalProfiles), $5: descending; $6 start (offset), $7 limit. One row per
-- audience of the page, each with the total matched; a page past the end gives one row of total only
-- (id NULL).
WITH matched AS MATERIALIZED (
    SELECT a.*, row_number() OVER (
               ORDER BY CASE WHEN $4 = 'name' AND NOT $5 THEN lower(a.name) END,
                        CASE WHEN $4 = 'name' AND $5 THEN lower(a.name) END DESC,
                        CASE WHEN $4 = 'creationTime' AND NOT $5 THEN a.created_at END,
                        CASE WHEN $4 = 'creationTime' AND $5 THEN a.created_at END DESC,
                        CASE WHEN $4 = 'updateTime' AND NOT $5 THEN a.updated_at END,
                        CASE WHEN $4 = 'updateTime' AND $5 THEN a.updated_at END DESC,
                        CASE WHEN $4 = 'totalProfiles' AND NOT $5 THEN a.member_count END,
                        CASE WHEN $4 = 'totalProfiles' AND $5 THEN a.member_count END DESC,
                        CASE WHEN $5 THEN a.id END DESC,
                        a.id) AS position
    FROM (
        SELECT s.id, d.id AS definition_id, coalesce(d.name, s.name) AS name,
               coalesce(d.description, s.description) AS description, s.type, s.status, d.expression,
               s.created_at, greatest(s.updated_at, d.updated_at) AS updated_at, s.member_count
        FROM segments s
        LEFT JOIN segment_definitions d
               ON d.audience_segment_id = s.id AND d.endpoint_id = s.endpoint_id AND d.deleted_at IS NULL
        WHERE s.endpoint_id = $1 AND s.status <> 'deleted'
    ) AS a
    WHERE ($2::text IS NULL OR strpos(lower(a.name), lower($2)) > 0)
      AND ($3::text IS NULL OR strpos(lower(a.description), lower($3)) > 0)
)
SELECT (SELECT count(*) FROM matched) AS total, page.*
FROM (SELECT) AS one
LEFT JOIN (SELECT * FROM matched WHERE position - $6 BETWEEN 1 AND $7) AS page ON true
ORDER BY page.position;

-- name: membership_segments
-- The audiences of an endpoint that may hold members, with what a look-up needs to normalise an identity
-- as their pushes did (identity_attribute, identity_hashing) and to name its values (attributes).
SELECT s.id, d.id AS definition_id, coalesce(d.name, s.name) AS name,
       coalesce(d.description, s.description) AS description, s.type, s.status, d.expression,
       s.created_at, greatest(s.updated_at, d.updated_at) AS updated_at, s.member_count,
       s.identity_attribute, s.identity_hashing, s.attributes
FROM segments s
LEFT JOIN segment_definitions d
       ON d.audience_segment_id = s.id AND d.endpoint_id = s.endpoint_id AND d.deleted_at IS NULL
WHERE s.endpoint_id = $1 AND s.status <> 'deleted' AND s.identity_attribute IS NOT NULL AND s.member_count > 0
ORDER BY s.id;

-- name: audience_memberships
-- $1 segment ids, $2 the identity as each of them stores it (pairwise).
SELECT segment_id, attrs FROM audience_memberships($1::bigint[], $2::text[]);

-- name: search_entities
-- Audiences (segments not deleted) and live definitions of endpoint $1 matching a parsed search: a match of
-- any group; a group matches when each of its terms does. Terms ($2 group, $3 field any|name|description,
-- $4 kind word|prefix|phrase, $5 text; pairwise) become tsqueries here, from parameters only; a term without
-- lexemes (punctuation only) is left out. $6: per group (index = group number), the id it requires, or NULL.
-- Ranked by ts_rank (a name match above a description match), an id match first; $7 limit, $8 offset. One
-- row per entity of the page, each with the total matched; a page past the end gives one row of total only.
WITH terms AS (
    SELECT t.grp, t.field,
           CASE t.kind WHEN 'phrase' THEN phraseto_tsquery('simple', t.text)
                       WHEN 'prefix' THEN search_prefix_query(t.text)
                       ELSE plainto_tsquery('simple', t.text) END AS query
    FROM unnest($2::int[], $3::text[], $4::text[], $5::text[]) AS t (grp, field, kind, text)
), groups AS (
    SELECT g.grp, g.id,
           (SELECT tsquery_and_all(query) FROM terms t
            WHERE t.grp = g.grp AND numnode(t.query) > 0) AS all_query,
           (SELECT tsquery_and_all(query) FROM terms t
            WHERE t.grp = g.grp AND t.field = 'any' AND numnode(t.query) > 0) AS any_query,
           (SELECT tsquery_and_all(query) FROM terms t
            WHERE t.grp = g.grp AND t.field = 'name' AND numnode(t.query) > 0) AS name_query,
           (SELECT tsquery_and_all(query) FROM terms t
            WHERE t.grp = g.grp AND t.field = 'description' AND numnode(t.query) > 0) AS description_query
    FROM unnest($6::bigint[]) WITH ORDINALITY AS g (id, grp)
), usable AS (
    -- a group of no id and no lexeme matches nothing
    SELECT * FROM groups WHERE id IS NOT NULL OR all_query IS NOT NULL
), summary AS (
    -- every lexeme of a group is in any match of it: the prefilter the GIN indexes answer (groups that
    -- require an id are found by it), and the ranking query
    SELECT tsquery_or_any(all_query) FILTER (WHERE id IS NULL) AS text_query,
           tsquery_or_any(all_query) AS rank_query,
           coalesce(array_agg(id) FILTER (WHERE id IS NOT NULL), '{}') AS ids
    FROM usable
), candidates AS (
    SELECT 'audience' AS kind, s.id, s.name, s.description, s.search_vector AS document
    FROM segments s
    WHERE s.endpoint_id = $1 AND s.status <> 'deleted'
      AND (s.search_vector @@ (SELECT text_query FROM summary) OR s.id = ANY ((SELECT ids FROM summary)::bigint[]))
    UNION ALL
    SELECT 'definition', d.id, d.name, d.description, d.search_vector
    FROM segment_definitions d
    WHERE d.endpoint_id = $1 AND d.deleted_at IS NULL
      AND (d.search_vector @@ (SELECT text_query FROM summary) OR d.id = ANY ((SELECT ids FROM summary)::bigint[]))
), matched AS MATERIALIZED (
    SELECT r.*, row_number() OVER (ORDER BY r.rank DESC, r.kind, r.id) AS position FROM (
        SELECT c.kind, c.id, c.name, c.description,
               coalesce(ts_rank(c.document, (SELECT rank_query FROM summary)), 0)
                   + CASE WHEN c.id = ANY ((SELECT ids FROM summary)::bigint[]) THEN 1 ELSE 0 END AS rank
        FROM candidates c
        WHERE EXISTS (
            SELECT 1 FROM usable g
            WHERE (g.id IS NULL OR c.id = g.id)
              AND (g.any_query IS NULL OR c.document @@ g.any_query)
              AND (g.name_query IS NULL OR ts_filter(c.document, '{a}') @@ g.name_query)
              AND (g.description_query IS NULL OR ts_filter(c.document, '{b}') @@ g.description_query))
    ) AS r
)
SELECT (SELECT count(*) FROM matched) AS total, page.*
FROM (SELECT) AS one
LEFT JOIN (SELECT * FROM matched WHERE position - $8 BETWEEN 1 AND $7) AS page ON true
ORDER BY page.position;

-- name: segment_profiles_sample
-- A sample of the rows of a definition's sources as profiles (gateway.segmentation.profiles.
-- sampled_profiles_sql): $1 the percentage each source is sampled at, $2 the seed; {page} the sampled row's
-- source and page, {first} whether its source is the first that has its identity.
SELECT {identity} AS identity, {attrs} AS attrs, {page} AS page, {first} AS first FROM {sources}

-- name: segment_profiles_sample_none
SELECT NULL::text COLLATE "C" AS identity, NULL::text[] AS attrs, NULL::bigint AS page, NULL::boolean AS first
WHERE $1::float8 IS NULL AND $2::float8 IS NULL

-- name: preview_insert
-- A new preview; expired ones of any endpoint go in the same statement.
WITH expired AS (DELETE FROM previews WHERE expires_at < now())
INSERT INTO previews (endpoint_id, expression, sources, evaluated_at, expires_at)
VALUES ($1, $2, $3, now(), now() + make_interval(secs => $4))
RETURNING id;

-- name: preview_get
SELECT id, expression, sources, evaluated_at, created_at, expires_at FROM previews
WHERE id = $1 AND endpoint_id = $2 AND expires_at > now();

-- name: preview_delete
DELETE FROM previews WHERE id = $1 AND endpoint_id = $2 AND expires_at > now() RETURNING id;

-- name: preview_page
-- One page of a preview: the profiles after identity {after} (empty on the first page) that the predicate
-- keeps, by identity in byte order; {values}: the attributes the expression uses, as text[].
SELECT p.identity, {values} AS values FROM ({profiles}) AS p
WHERE ({predicate}){after}
ORDER BY p.identity COLLATE "C" LIMIT {limit};

-- name: preview_next_identities
-- The next identities of a source after $1 ('' from the first), by its primary key.
SELECT identity FROM {members} WHERE identity > $1 ORDER BY identity LIMIT $2;

-- name: estimate_exact_budget
-- The exact count's time budget, for the rest of the transaction ($1: e.g. '300ms').
SELECT set_config('statement_timeout', $1, true);

-- name: estimate_exact
SELECT count(*) AS profiles, count(*) FILTER (WHERE {predicate}) AS matched FROM ({profiles}) AS p;

-- name: estimate_sample
-- A sample's sums per source (its 1-based number in the sample's order) over its pages: n the rows read
-- from a page, m those that are their profile's first-source row and match, profiles the first-source
-- rows; what the ratio estimator of a cluster sample needs (gateway.segmentation.estimates).
SELECT source, count(*) AS pages, sum(n)::float8 AS n, sum(m)::float8 AS m, sum(m * m)::float8 AS mm,
       sum(n * n)::float8 AS nn, sum(m * n)::float8 AS mn, sum(profiles)::bigint AS profiles
FROM (SELECT p.page >> 32 AS source, count(*) AS n, count(*) FILTER (WHERE p.first AND ({predicate})) AS m,
             count(*) FILTER (WHERE p.first) AS profiles
      FROM ({profiles}) AS p GROUP BY p.page) AS c
GROUP BY source ORDER BY source;

-- name: estimate_source_rows
-- The rows of each source (its member count, kept with its members).
SELECT id, member_count FROM segments WHERE id = ANY($1::bigint[]);
