-- Issue 17: alerts are deduplicated by occurrence, and a message whose fate is unknown is sent
-- again, marked as a possible repeat, instead of being given up.
--
-- 1. The same fact happening again later (promote 1.1.0, roll it back, promote it again) is a
--    new alert: the CloudEvents id (already the primary key of alerts) is the only identity.
--    The fact key's UNIQUE constraint went with the column; the stored payload keeps it for
--    rows written before this migration.
ALTER TABLE alerts DROP COLUMN dedupe_key;

-- 2. uncertain_refs: the message ids (the "ref" shown in every message) of earlier sends of this
--    delivery whose outcome is unknown (the process died after claiming it, or the provider did
--    not answer in time after the request was written). A delivery with uncertain refs is sent
--    again once, tagged "possibly repeated" with those refs. Rows left 'uncertain' by the old
--    at-most-once policy stay as they are: they are history, not re-sent days later.
ALTER TABLE deliveries ADD COLUMN uncertain_refs uuid[] NOT NULL DEFAULT '{}';
