-- The approval DAG of every candidate version: the join state of the choreography.

CREATE TABLE candidates (
    model          text        NOT NULL,
    version        text        NOT NULL,
    -- running | passed | failed | superseded | ignored (model not configured / no gates)
    status         text        NOT NULL,
    reason         text,
    registration   jsonb       NOT NULL,   -- the ModelVersionRegistered data
    stages         jsonb       NOT NULL,   -- the DAG as configured when the version registered
    passed_order   text[]      NOT NULL DEFAULT '{}',
    correlation_id text,                   -- continues the lifecycle's correlation in sweeps
    registered_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);
CREATE INDEX candidates_running ON candidates (model) WHERE status = 'running';

CREATE TABLE stage_results (
    model       text        NOT NULL,
    version     text        NOT NULL,
    stage       text        NOT NULL,
    kind        text        NOT NULL,
    status      text        NOT NULL,      -- pending | waiting | passed | failed
    started_at  timestamptz,
    deadline    timestamptz,
    finished_at timestamptz,
    evidence    jsonb       NOT NULL DEFAULT '[]',
    reason      text,
    PRIMARY KEY (model, version, stage),
    FOREIGN KEY (model, version) REFERENCES candidates (model, version)
);
-- What the timeout sweep reads.
CREATE INDEX stage_results_deadlines ON stage_results (deadline) WHERE status = 'waiting';

-- Every approval / rejection / external report received, with what became of it: the first
-- accepted or buffered one per stage is the decision; the others are kept as ignored.
CREATE TABLE decisions (
    id          bigserial   PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    event_type  text        NOT NULL,
    model       text        NOT NULL,
    version     text        NOT NULL,
    stage       text        NOT NULL,
    kind        text        NOT NULL,      -- manual | external
    passed      boolean     NOT NULL,
    actor       text        NOT NULL,
    decided_at  timestamptz NOT NULL,      -- the event's time
    detail      text,
    disposition text        NOT NULL,      -- accepted | buffered | ignored
    note        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_candidate ON decisions (model, version, stage, id);
