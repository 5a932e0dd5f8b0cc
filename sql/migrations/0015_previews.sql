-- Previews (gateway.segmentation.previews): a preview is only its definition (expression, sources, the
-- "now" its relative dates are computed against), never its members: each page is evaluated live over
-- the sources with a keyset on identity, so a preview holds no personal data and privacy's erase has
-- nothing to remove from it. Expired previews are answered as missing and deleted on the next create.
CREATE TABLE previews (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  bigint NOT NULL REFERENCES endpoints (id),
    expression   text NOT NULL,
    sources      bigint[],              -- segment ids in merge order; NULL for "*"
    evaluated_at timestamptz NOT NULL,  -- "now" for the expression's relative dates, fixed for its life
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX previews_expires ON previews (expires_at);
