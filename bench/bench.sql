-- SQL of the benchmark's anchors (psql on the gateway's server) and of the naive peer.
-- Named blocks, split by gateway.db.queries.parse_queries like sql/queries.sql.

-- name: anchor_create
-- The limit: the same rows loaded by psql \copy into a table keyed like the gateway's member tables.
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_anchor;
CREATE TABLE bench_anchor (email text COLLATE "C" PRIMARY KEY, first_name text, last_name text, sex text)

-- name: anchor_gone_create
CREATE TEMPORARY TABLE bench_gone (email text, first_name text, last_name text, sex text)

-- name: anchor_remove
DELETE FROM bench_anchor AS a USING bench_gone AS g WHERE a.email = g.email

-- name: anchor_erase_one
DELETE FROM audience.members_{segment_id} WHERE identity = '{identity}'

-- name: member_count
SELECT count(*) FROM audience.members_{segment_id}

-- name: naive_create
CREATE TABLE IF NOT EXISTS naive_members (identity text PRIMARY KEY, attrs text[])

-- name: naive_clear
DELETE FROM naive_members

-- name: naive_upsert
INSERT INTO naive_members VALUES ($1, $2) ON CONFLICT (identity) DO UPDATE SET attrs = EXCLUDED.attrs

-- name: naive_delete
DELETE FROM naive_members WHERE identity = $1

-- name: naive_count
SELECT count(*) FROM naive_members

-- name: log_statements_on
-- bench.profile: every statement's duration in the server log (no restart needed)
ALTER SYSTEM SET log_min_duration_statement = 0

-- name: log_statements_off
ALTER SYSTEM RESET log_min_duration_statement

-- name: reload_configuration
SELECT pg_reload_conf()

-- name: segment_job_define
-- The segment-job scenario's definition and its Queries audience, written as rows while the definitions
-- API is not there; {source}: the source segment's id. Prints the definition's id.
WITH audience AS (
    INSERT INTO segments (endpoint_id, name, description, category, type)
    SELECT endpoint_id, 'segment-job', '', '', 'Queries' FROM segments WHERE id = {source}
    RETURNING id, endpoint_id
)
INSERT INTO segment_definitions (endpoint_id, name, name_key, expression, sources, audience_segment_id)
SELECT endpoint_id, 'segment-job', 'segment-job', 'Country = "US" and LastPurchase occurs <= 30 days before now',
       ARRAY[{source}]::bigint[], id
FROM audience
RETURNING id

-- name: anchor_segment_job_drop
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_segment_job

-- name: anchor_segment_job
-- The segment job done by hand: the same members selected into a new table, then its primary key.
-- {source}: the source segment's id; attrs are Email, Country, LastPurchase.
CREATE TABLE bench_segment_job AS
SELECT identity, attrs FROM audience.members_{source}
WHERE attrs[2] = 'US' AND attrs[3]::timestamptz >= now() - interval '30 days' AND attrs[3]::timestamptz <= now();
ALTER TABLE bench_segment_job ADD PRIMARY KEY (identity)

-- name: anchor_segment_job_count
SELECT count(*) FROM bench_segment_job

-- name: search_seed
-- {count} segments of the default endpoint with generated names and descriptions (words of fixed lists;
-- every name and description differs by its number), and a definition for one in ten, as rows.
INSERT INTO segments (endpoint_id, name, description)
SELECT (SELECT id FROM endpoints WHERE name = 'default'),
       w.season[1 + i % 4] || ' ' || w.noun[1 + (i / 4) % 10] || ' ' || i,
       'customers who ' || w.verb[1 + i % 7] || ' ' || w.noun[1 + (i / 3) % 10] || ' in ' || w.place[1 + i % 8]
FROM generate_series(1, {count}) AS i,
     (SELECT ARRAY['spring', 'summer', 'autumn', 'winter'] AS season,
             ARRAY['sale', 'buyers', 'newsletter', 'loyalty', 'shoes', 'travel', 'gold', 'trial', 'churn', 'vip'] AS noun,
             ARRAY['bought', 'opened', 'clicked', 'visited', 'returned', 'ordered', 'cancelled'] AS verb,
             ARRAY['France', 'Germany', 'Spain', 'Italy', 'Canada', 'Japan', 'Brazil', 'India'] AS place) AS w;
INSERT INTO segment_definitions (endpoint_id, name, name_key, description, expression, audience_segment_id)
SELECT endpoint_id, 'definition ' || name, 'definition ' || lower(name), description, 'true', id
FROM segments WHERE name ~ ' [0-9]*0$' AND endpoint_id = (SELECT id FROM endpoints WHERE name = 'default');
ANALYZE segments;
ANALYZE segment_definitions

-- name: members_seed
-- {segments} segments of the default endpoint, each with {members} members written straight into its table
-- (the look-up is measured, not the push): member k of segment i is u<(37·i + k) mod 4·{members}>@example.com,
-- so one identity is in about a quarter of them.
DO $$
DECLARE
    segment bigint;
BEGIN
    FOR i IN 1 .. {segments} LOOP
        INSERT INTO segments (endpoint_id, name, identity_attribute, attributes, member_count)
        VALUES ((SELECT id FROM endpoints WHERE name = 'default'), 'members-' || i, 'email', '{{email,plan}}',
                {members})
        RETURNING id INTO segment;
        EXECUTE format('CREATE TABLE audience.%I (identity text COLLATE "C" PRIMARY KEY, attrs text[])',
                       'members_' || segment);
        EXECUTE format('INSERT INTO audience.%I SELECT x, ARRAY[x, $1] FROM (SELECT ''u'' || ((37 * $2 + k) %% (4 * $3)) '
                       '|| ''@example.com'' AS x FROM generate_series(0, $3 - 1) AS k) AS s', 'members_' || segment)
            USING 'plan-' || i, i, {members};
    END LOOP;
END $$;
ANALYZE segments

-- name: anchor_estimate_count
-- The estimate scenario's count done by hand ({source}: the source segment's id; attrs Email, Country,
-- LastPurchase), the expression of the segment-job scenario.
SELECT count(*) FROM audience.members_{source}
WHERE attrs[2] = 'US' AND attrs[3]::timestamptz >= now() - interval '30 days' AND attrs[3]::timestamptz <= now()
