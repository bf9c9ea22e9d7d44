-- The notifier's delivery log (issue 7).
-- alerts: one row per alert-worthy fact; deliveries: one row per (event id, channel), which is
-- both the durable pending queue of the delivery loop and the record that it was delivered once.

CREATE TABLE alerts (
    event_id       text PRIMARY KEY,
    kind           text NOT NULL,
    model          text NOT NULL,
    severity       text NOT NULL,
    correlation_id text,
    dedupe_key     text NOT NULL UNIQUE,
    payload        jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    event_id        text NOT NULL REFERENCES alerts (event_id),
    channel         text NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sending', 'delivered', 'failed', 'uncertain')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    message_id      uuid,
    digest          boolean,
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, channel)
);

CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at, created_at)
    WHERE state = 'pending';
CREATE INDEX deliveries_message ON deliveries (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX deliveries_sending ON deliveries (claimed_at) WHERE state = 'sending';

-- A channel the provider called invalid (WeCom 93000) stays disabled across restarts until
-- its URL changes (url_fingerprint is a truncated sha256, never the URL).
CREATE TABLE channel_state (
    channel         text PRIMARY KEY,
    url_fingerprint text NOT NULL,
    disabled_at     timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL
);
