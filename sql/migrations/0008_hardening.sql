-- api_keys.bootstrap: the key was made from GATEWAY_API_KEY. A start with another value revokes the keys
-- earlier values made (gateway.auth.ensure_bootstrap_key); until now they all stayed valid. The keys
-- made from it so far are known by the label it gave them.
ALTER TABLE api_keys ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;
UPDATE api_keys SET bootstrap = true WHERE label = 'GATEWAY_API_KEY';

-- The rejected rows an endpoint holds (GATEWAY_REJECTS_MAX_PER_ENDPOINT) are summed over its segments'
-- uploads at each upload's first rejected row: only uploads that still hold some are indexed.
CREATE INDEX uploads_rejects_held_idx ON uploads (segment_id) INCLUDE (rejects_stored)
    WHERE rejects_expired_at IS NULL AND rejects_stored > 0;
