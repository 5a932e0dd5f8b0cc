-- Audience search and membership lookup (gateway.segmentation.audiences, gateway.segmentation.search).
--
-- Search is PostgreSQL full-text search with the 'simple' configuration (no stemming, no stop words:
-- audience names are labels, not prose), the name weighted A and the description B, over one GIN index
-- per table. Queries are built from parameters only (plainto_tsquery, phraseto_tsquery, and prefix queries
-- from the lexemes to_tsvector makes), never from user text parsed as tsquery syntax.

-- The searched document of a name and description; the indexes and the queries use this one expression.
CREATE FUNCTION search_document(name text, description text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector('simple'::regconfig, name), 'A')
        || setweight(to_tsvector('simple'::regconfig, description), 'B')
$$;

-- AND and OR of any number of tsqueries (NULLs skipped; NULL when none).
CREATE AGGREGATE tsquery_and_all(tsquery) (SFUNC = tsquery_and, STYPE = tsquery);
CREATE AGGREGATE tsquery_or_any(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);

-- A prefix query of a term: every lexeme of the term as a prefix ('lexeme':*), all of them. Each lexeme is
-- quoted as tsquery input quotes one (quotes doubled, backslashes escaped). NULL when the term has none.
CREATE FUNCTION search_prefix_query(term text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT tsquery_and_all(('''' || replace(replace(lexeme, chr(92), chr(92) || chr(92)), '''', '''''')
                            || ''':*')::tsquery)
    FROM unnest(tsvector_to_array(to_tsvector('simple'::regconfig, term))) AS lexeme
$$;

-- The document is stored beside the row it is made of (kept by PostgreSQL, never written by the gateway):
-- ranking the few thousand rows a common word matches then reads it instead of parsing every name again
-- (measured at 10,000 segments, a word in a quarter of them: 15–30 ms in the database without it, 5 ms with
-- it). ts_filter(search_vector, '{a}') is the name alone, '{b}' the description alone.
ALTER TABLE segments
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (search_document(name, description)) STORED;
ALTER TABLE segment_definitions
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (search_document(name, description)) STORED;
CREATE INDEX segments_search ON segments USING gin (search_vector);
CREATE INDEX segment_definitions_search ON segment_definitions USING gin (search_vector);

-- The members rows of one identity in each segment given: segment_ids[i] is looked up with identities[i]
-- (the identity as that segment stores it: normalised and hashed by the push's rule, in Python). One primary
-- key probe per segment table (about 27 µs each, most of it EXECUTE's parse and plan); a segment whose table
-- does not exist (no data yet, purged) gives nothing. A table dropped between to_regclass and its probe (a
-- purge at that instant) raises undefined_table: the caller runs the call again, rather than paying for an
-- exception block (a subtransaction) per segment, about a quarter more time.
-- Table names are made from integer ids only.
CREATE FUNCTION audience_memberships(segment_ids bigint[], identities text[])
RETURNS TABLE (segment_id bigint, attrs text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    i integer;
BEGIN
    FOR i IN 1 .. coalesce(array_length(segment_ids, 1), 0) LOOP
        IF to_regclass(format('audience.%I', 'members_' || segment_ids[i])) IS NOT NULL THEN
            RETURN QUERY EXECUTE format('SELECT $1, m.attrs FROM audience.%I m WHERE m.identity = $2',
                                        'members_' || segment_ids[i])
                USING segment_ids[i], identities[i];
        END IF;
    END LOOP;
END $$;
