-- Inbox of the batch consumers (predictions, feedback: thousands of events a second). Its key is
-- a 128-bit digest of (consumer, event id): PostgreSQL maintains a narrow uuid index about a
-- third cheaper than the text pair of mlcp_inbox, and the rows of a batch are inserted in key
-- order (mlcp.runtime.inbox.claim_many). A false duplicate needs a SHA-256 prefix collision.
CREATE TABLE IF NOT EXISTS mlcp_batch_inbox (
    key         uuid        PRIMARY KEY,
    consumer    text        NOT NULL,
    event_id    text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Rows are appended in time order, so BRIN indexes find old rows for the retention purge at
-- almost no cost per insert (a btree on received_at would double the inbox's write cost).
CREATE INDEX IF NOT EXISTS mlcp_batch_inbox_received ON mlcp_batch_inbox USING brin (received_at);
CREATE INDEX IF NOT EXISTS mlcp_inbox_received ON mlcp_inbox USING brin (received_at);
