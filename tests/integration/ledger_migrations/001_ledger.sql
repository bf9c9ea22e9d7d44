-- A ledger with no uniqueness on purpose: a double application shows up as two rows.
CREATE TABLE ledger (
    id        bigserial PRIMARY KEY,
    event_id  text NOT NULL,
    dataset   text NOT NULL,
    batch_id  text NOT NULL,
    rows      bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
