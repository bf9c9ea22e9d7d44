-- Inbox: one row per (consumer, CloudEvents id) applied; written in the handler's transaction.
CREATE TABLE IF NOT EXISTS mlcp_inbox (
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Outbox: every event that follows a state change, written in that change's transaction.
-- The table is the source of truth; published rows are kept for a retention period.
CREATE TABLE IF NOT EXISTS mlcp_outbox (
    id           bigserial   PRIMARY KEY,
    event_id     text        NOT NULL UNIQUE,
    topic        text        NOT NULL,
    key          text,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS mlcp_outbox_pending ON mlcp_outbox (id) WHERE published_at IS NULL;
