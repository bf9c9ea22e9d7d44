-- The W3C traceparent of the TrainingRequested a run was queued from: the worker that picks the
-- run up later (another poll, another process) continues the lifecycle's trace from here.
ALTER TABLE runs ADD COLUMN traceparent text;
