-- The trainer's state: data ledger, retrain triggers, training runs and their tracking,
-- and its projection of each model's production version.

-- One row per dataset; its row lock serialises the dataset's ledger so that ``seq`` is
-- gap-free and in commit order (the trigger counts rows by position, so a position must never
-- become visible after a later one).
CREATE TABLE datasets (
    dataset     text PRIMARY KEY,
    last_seq    bigint NOT NULL DEFAULT 0,
    total_rows  bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
    dataset       text NOT NULL REFERENCES datasets,
    seq           bigint NOT NULL,
    batch_id      text NOT NULL,
    event_id      text NOT NULL,
    uri           text NOT NULL,
    rows          bigint NOT NULL,
    cum_rows      bigint NOT NULL,
    sha256        text NOT NULL,
    completeness  double precision NOT NULL,
    format        text,
    verified      boolean NOT NULL,
    arrived_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, batch_id),
    UNIQUE (dataset, seq)
);

-- Batches refused at arrival (checksum mismatch, a batch id re-sent with other content).
CREATE TABLE rejected_batches (
    event_id         text PRIMARY KEY,
    dataset          text NOT NULL,
    batch_id         text NOT NULL,
    uri              text NOT NULL,
    sha256_declared  text NOT NULL,
    sha256_actual    text,
    reason           text NOT NULL,
    rejected_at      timestamptz NOT NULL DEFAULT now()
);

-- Per model: the ledger position its last requested run covers.
CREATE TABLE model_triggers (
    model                  text PRIMARY KEY,
    dataset                text NOT NULL,
    consumed_seq           bigint NOT NULL DEFAULT 0,
    consumed_rows          bigint NOT NULL DEFAULT 0,
    last_request_id        text,
    last_requested_at      timestamptz,
    last_drift_request_at  timestamptz,
    drift_suppressed       bigint NOT NULL DEFAULT 0
);

-- Every request this trainer decided (keyed by the TrainingRequested CloudEvents id).
CREATE TABLE training_requests (
    request_id           text PRIMARY KEY,
    model                text NOT NULL,
    reason               text NOT NULL,
    dataset              text NOT NULL,
    ledger_seq           bigint NOT NULL,
    rows_since_last_run  bigint,
    threshold            bigint,
    requested_by         text,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- One run per TrainingRequested: a redelivered or re-claimed request finds its run here.
CREATE TABLE runs (
    run_id             text PRIMARY KEY,
    request_id         text NOT NULL UNIQUE,
    request_event      bytea NOT NULL,
    model              text NOT NULL,
    reason             text NOT NULL,
    dataset            text NOT NULL,
    ledger_seq         bigint NOT NULL,
    status             text NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'running', 'finished', 'failed')),
    attempt            integer NOT NULL DEFAULT 0,
    lease_until        timestamptz,
    worker             text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    duration_s         double precision,
    entrypoint         text,
    seed               bigint,
    code_version       text,
    environment        jsonb,
    feature_schema     jsonb,
    label              text,
    baseline           jsonb,
    reference_profile  jsonb,
    failed_stage       text,
    error              text,
    error_type         text
);
CREATE INDEX runs_open ON runs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_model ON runs (model, created_at);

CREATE TABLE run_attempts (
    run_id      text NOT NULL REFERENCES runs,
    attempt     integer NOT NULL,
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    outcome     text,
    PRIMARY KEY (run_id, attempt)
);

CREATE TABLE run_params (
    run_id  text NOT NULL REFERENCES runs,
    name    text NOT NULL,
    value   jsonb NOT NULL,
    PRIMARY KEY (run_id, name)
);

-- scope: 'candidate' (the new model) or 'baseline' (production scored on the same holdout).
CREATE TABLE run_metrics (
    run_id  text NOT NULL REFERENCES runs,
    scope   text NOT NULL CHECK (scope IN ('candidate', 'baseline')),
    name    text NOT NULL,
    value   double precision NOT NULL,
    PRIMARY KEY (run_id, scope, name)
);

CREATE TABLE run_artifacts (
    run_id      text NOT NULL REFERENCES runs,
    uri         text NOT NULL,
    sha256      text NOT NULL,
    format      text NOT NULL,
    size_bytes  bigint,
    PRIMARY KEY (run_id, sha256)
);

CREATE TABLE run_batches (
    run_id    text NOT NULL REFERENCES runs,
    position  integer NOT NULL,
    dataset   text NOT NULL,
    batch_id  text NOT NULL,
    sha256    text NOT NULL,
    rows      bigint NOT NULL,
    PRIMARY KEY (run_id, position)
);

-- Projection of the registry's facts the worker needs to score production as a baseline.
CREATE TABLE model_versions (
    model            text NOT NULL,
    version          text NOT NULL,
    run_id           text NOT NULL,
    artifact_uri     text NOT NULL,
    artifact_sha256  text NOT NULL,
    artifact_format  text NOT NULL,
    PRIMARY KEY (model, version)
);

CREATE TABLE production (
    model       text PRIMARY KEY,
    version     text,
    event_id    text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
