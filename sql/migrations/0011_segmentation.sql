-- Segmentation (gateway.segmentation): definitions, segment jobs and their schedules.
--
-- A definition is a PQL expression over the members of its sources; segment jobs evaluate it into its own
-- audience, a segment of type 'Queries' created with it (audience_segment_id), rebuilt by build-and-swap
-- like a REPLACE. Names are unique per endpoint among live definitions, compared by gateway's one name
-- rule (fold_name, applied in Python: name_key).
CREATE TABLE segment_definitions (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id          bigint NOT NULL REFERENCES endpoints (id),
    name                 text NOT NULL CHECK (name <> ''),
    name_key             text NOT NULL,
    description          text NOT NULL DEFAULT '',
    expression           text NOT NULL,
    -- segment ids in merge order ("first source wins"); NULL for "*": every active Contact List and
    -- Database of the endpoint, lowest id first, as of each evaluation
    sources              bigint[],
    batch_enabled        boolean NOT NULL DEFAULT true,
    audience_segment_id  bigint NOT NULL UNIQUE REFERENCES segments (id),
    created_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at           timestamptz
);
CREATE UNIQUE INDEX segment_definitions_name ON segment_definitions (endpoint_id, name_key) WHERE deleted_at IS NULL;
CREATE INDEX segment_definitions_endpoint ON segment_definitions (endpoint_id, id) WHERE deleted_at IS NULL;

-- Segment jobs are rows of jobs (kind 'SegmentJob', no segment_id) run by the generic queue; what they
-- evaluate, who asked, and what each definition gave.
CREATE TABLE segment_jobs (
    job_id          bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    all_definitions boolean NOT NULL,           -- [{"segmentId": "*"}]: every live definition when it runs
    definition_ids  bigint[] NOT NULL DEFAULT '{}',
    source          text NOT NULL CHECK (source IN ('api', 'scheduler')),
    schedule_id     bigint,                     -- source 'scheduler': the schedule that created it
    -- per definition: {"<id>": {"profiles", "realized", "existing", "exited", "timeInMs"}}; totals
    metrics         jsonb NOT NULL DEFAULT '{}',
    errors          jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX segment_jobs_schedule ON segment_jobs (schedule_id) WHERE schedule_id IS NOT NULL;

-- Schedules of batch segmentation. The due time lives in the row: one statement claims a due row
-- (FOR UPDATE SKIP LOCKED), creates the job and moves next_run_at past now, so any number of gateway
-- processes create one job per due time, and a long outage gives one catch-up run. Cron times are UTC.
CREATE TABLE schedules (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id  bigint NOT NULL REFERENCES endpoints (id),
    name         text NOT NULL CHECK (name <> ''),
    type         text NOT NULL DEFAULT 'batch_segmentation' CHECK (type = 'batch_segmentation'),
    segments     text[] NOT NULL,               -- definition ids, or {'*'}
    schedule     text NOT NULL,                 -- cron: 5 fields, or Quartz's 6/7 with seconds first
    state        text NOT NULL DEFAULT 'inactive' CHECK (state IN ('active', 'inactive')),
    next_run_at  timestamptz,                   -- NULL while inactive
    last_job_id  bigint REFERENCES jobs (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX schedules_endpoint ON schedules (endpoint_id, id);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE state = 'active';
