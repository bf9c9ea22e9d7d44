-- A batch is identified by its content: the ledger counts a (dataset, sha256) once, whatever
-- its batch_id. Announcements of content already in the ledger are kept here as duplicates
-- (visible in the lineage and the mlcp_trainer_duplicate_batches_total metric), never counted.
-- (Ledgers written before this may hold one content twice; the index is therefore not unique.
-- New rows are checked under the dataset's row lock, which serialises every ledger write.)
CREATE INDEX ledger_content ON ledger (dataset, sha256);

CREATE TABLE duplicate_batches (
    event_id     text PRIMARY KEY,          -- the DataArrived that re-announced the content
    dataset      text NOT NULL,
    batch_id     text NOT NULL,             -- as announced (the same id or another one)
    uri          text NOT NULL,
    rows         bigint NOT NULL,
    sha256       text NOT NULL,
    of_batch_id  text NOT NULL,             -- the ledger batch that holds this content
    of_seq       bigint NOT NULL,
    arrived_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX duplicate_batches_of ON duplicate_batches (dataset, of_seq);

-- How a run compared predictions with labels on its holdout (models.<name>.target), so that
-- its lineage can reproduce its accuracy.
ALTER TABLE runs ADD COLUMN target jsonb;
