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
INSERT INTO api_keys (endpoint_id, lookup_id, secret_hash, scope, label, expires_at)
VALUES ((SELECT id FROM endpoints WHERE name = $1), $2, $3, $4, $5, $6)
ON CONFLICT (lookup_id) DO NOTHING
RETURNING id;

-- name: key_count
SELECT count(*) FROM api_keys;

-- name: key_bootstrap_lock
SELECT pg_advisory_xact_lock(hashtext('audience-gateway:bootstrap-key'));

-- name: segment_insert
INSERT INTO segments (endpoint_id, name, description, category, type)
VALUES ($1, $2, $3, $4, $5)
RETURNING id;

-- name: segment_list
SELECT id, name, type FROM segments
WHERE endpoint_id = $1 AND status <> 'deleted'
ORDER BY id;

-- name: segment_get
SELECT id, name, description, category, type, status, identity_attribute, attributes, created_at, updated_at
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
