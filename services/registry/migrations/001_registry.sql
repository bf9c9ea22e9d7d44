-- The registry's system of record: models, versions, aliases (with history), rollout state,
-- API tokens and grants, and the hash-chained audit log.

CREATE TABLE models (
    name        text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE versions (
    model             text        NOT NULL REFERENCES models (name),
    version           text        NOT NULL,
    -- SemVer parts, for ordering in SQL (the registry assigns plain MAJOR.MINOR.PATCH).
    major             integer     NOT NULL,
    minor             integer     NOT NULL,
    patch             integer     NOT NULL,
    run_id            text        NOT NULL,
    previous_version  text,
    bump              text        CHECK (bump IN ('major', 'minor', 'patch')),
    status            text        NOT NULL CHECK (status IN
                          ('candidate', 'approved', 'rejected', 'canary', 'production', 'archived')),
    metrics           jsonb       NOT NULL,
    params            jsonb       NOT NULL,
    baseline          jsonb,
    datasets          jsonb       NOT NULL,
    feature_schema    jsonb       NOT NULL,
    label             text,
    artifact_uri      text        NOT NULL,
    artifact_sha256   text        NOT NULL,
    artifact_format   text        NOT NULL,
    artifact_size     bigint,
    reference_profile jsonb       NOT NULL,
    code_version      text,
    entrypoint        text,
    environment       jsonb,
    training_reason   text,
    duration_s        double precision,
    owner             text        NOT NULL,
    cause_event_id    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version),
    -- One run is one version, however often RunFinished is delivered.
    UNIQUE (model, run_id)
);
CREATE INDEX versions_order ON versions (model, major DESC, minor DESC, patch DESC);
CREATE INDEX versions_status ON versions (model, status);

-- The current holder of each alias; revision = id of the alias_history row that set it (ETag).
CREATE TABLE aliases (
    model           text             NOT NULL REFERENCES models (name),
    alias           text             NOT NULL,
    version         text             NOT NULL,
    traffic_percent double precision,
    revision        bigint           NOT NULL,
    updated_at      timestamptz      NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES versions (model, version)
);

-- Every alias change ever: version NULL means the alias was removed.
CREATE TABLE alias_history (
    id               bigserial        PRIMARY KEY,
    model            text             NOT NULL REFERENCES models (name),
    alias            text             NOT NULL,
    version          text,
    previous_version text,
    traffic_percent  double precision,
    actor            text             NOT NULL,
    reason           text             NOT NULL,
    cause_event_id   text,
    at               timestamptz      NOT NULL
);
CREATE INDEX alias_history_lookup ON alias_history (model, alias, at DESC, id DESC);

-- Rollout state per model: what serves, since when, and where production rolls back to.
CREATE TABLE rollouts (
    model            text             PRIMARY KEY REFERENCES models (name),
    canary           text,
    canary_percent   double precision,
    production       text,
    production_since timestamptz,
    rollback_target  text,
    updated_at       timestamptz      NOT NULL DEFAULT now()
);

-- API tokens: only a hash of the secret is stored (scrypt, with a per-token salt).
CREATE TABLE tokens (
    id          text        PRIMARY KEY,
    principal   text        NOT NULL,
    secret_hash text        NOT NULL,
    description text,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE grants (
    id          bigserial   PRIMARY KEY,
    token_id    text        NOT NULL REFERENCES tokens (id),
    role        text        NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin', 'auditor')),
    expires_at  timestamptz,
    granted_by  text        NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_by  text
);
CREATE INDEX grants_token ON grants (token_id);

-- Append-only audit log; each row's hash covers the previous row's hash (see domain.audit_hash).
CREATE TABLE audit_log (
    seq            bigint      PRIMARY KEY,
    at             timestamptz NOT NULL,
    actor          text        NOT NULL,
    action         text        NOT NULL,
    model          text,
    version        text,
    before         jsonb,
    after          jsonb,
    cause_event_id text,
    prev_hash      text        NOT NULL,
    hash           text        NOT NULL
);
CREATE INDEX audit_log_model ON audit_log (model, seq);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
