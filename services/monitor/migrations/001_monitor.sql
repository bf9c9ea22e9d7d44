-- Projection of ModelVersionRegistered: each version's reference profile and offline metrics.
CREATE TABLE versions (
    model             text        NOT NULL,
    version           text        NOT NULL,
    reference_profile jsonb       NOT NULL,
    metrics           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    registered_at     timestamptz NOT NULL,
    PRIMARY KEY (model, version)
);

-- Projection of ModelPromoted / ModelRolledBack: which version holds which alias, since when.
CREATE TABLE aliases (
    model   text        NOT NULL,
    alias   text        NOT NULL,
    version text        NOT NULL,
    since   timestamptz NOT NULL,
    PRIMARY KEY (model, alias)
);

-- Live traffic of each version: the running prediction count (numbers the predictions rows)
-- and the drift window currently filling up.
CREATE TABLE traffic (
    model          text        NOT NULL,
    version        text        NOT NULL,
    served         bigint      NOT NULL DEFAULT 0,
    window_seq     integer     NOT NULL DEFAULT 1,
    window_size    integer     NOT NULL DEFAULT 0,
    window_started timestamptz,
    window_ended   timestamptz,
    PRIMARY KEY (model, version)
);

-- The rows of open drift windows, one chunk per batch (encoded numpy matrices). A window's
-- chunks are read and deleted when it closes: a restart mid-window loses nothing.
CREATE TABLE window_chunks (
    id          bigserial PRIMARY KEY,
    model       text      NOT NULL,
    version     text      NOT NULL,
    window_seq  integer   NOT NULL,
    rows        integer   NOT NULL,
    numeric     bytea     NOT NULL,
    categorical bytea     NOT NULL
);
CREATE INDEX window_chunks_window ON window_chunks (model, version, window_seq);

-- A canary bake or a production rollback window. At most one open watch per (model, alias).
CREATE TABLE watches (
    id                bigserial   PRIMARY KEY,
    model             text        NOT NULL,
    version           text        NOT NULL,
    alias             text        NOT NULL,
    baseline_version  text,
    started_at        timestamptz NOT NULL,
    until             timestamptz,          -- production: end of the rollback window
    served_from       bigint      NOT NULL, -- traffic.served of the version at the start
    baseline_from     bigint,               -- traffic.served of the baseline at the start
    next_window       integer     NOT NULL DEFAULT 1,
    ended_at          timestamptz,
    outcome           text
);
CREATE UNIQUE INDEX watches_open ON watches (model, alias) WHERE ended_at IS NULL;

-- Predictions of watched versions (and their baselines), numbered per version in arrival order,
-- for error rate, p95 latency and live accuracy; joined to feedback by request id.
CREATE TABLE predictions (
    model      text             NOT NULL,
    request_id text             NOT NULL,
    version    text             NOT NULL,
    n          bigint           NOT NULL,
    ts         timestamptz      NOT NULL,
    latency_ms double precision NOT NULL,
    error      boolean          NOT NULL,
    prediction text,
    PRIMARY KEY (model, request_id)
);
CREATE INDEX predictions_version_n ON predictions (model, version, n);

CREATE TABLE feedback (
    model      text        NOT NULL,
    request_id text        NOT NULL,
    label      text        NOT NULL,
    ts         timestamptz NOT NULL,
    PRIMARY KEY (model, request_id)
);

-- Every decision, once: drift per window, canary verdict per watch, production verdict per
-- watch window. The key makes a replayed or re-derived decision a no-op.
CREATE TABLE decisions (
    model      text        NOT NULL,
    version    text        NOT NULL,
    window_id  text        NOT NULL,
    kind       text        NOT NULL,  -- drift | canary | production
    emitted    boolean     NOT NULL,
    payload    jsonb       NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, window_id, kind)
);

-- Bad input that is counted and reported, never fatal (unknown version, missing features …).
CREATE TABLE ingest_issues (
    model     text        NOT NULL,
    version   text        NOT NULL,
    reason    text        NOT NULL,
    count     bigint      NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version, reason)
);
