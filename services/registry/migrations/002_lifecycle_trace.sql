-- The lifecycle a version belongs to: the correlation id and W3C traceparent of the RunFinished
-- it was registered from. Events the API emits about the version (approvals, CI check reports)
-- carry them, so one correlation id and one trace follow the model from DataArrived to
-- ModelPromoted even across a person's decision.
ALTER TABLE versions ADD COLUMN correlation_id text;
ALTER TABLE versions ADD COLUMN traceparent text;
