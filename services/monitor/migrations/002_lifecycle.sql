-- The lifecycle a version belongs to: the correlation id and W3C traceparent of the
-- ModelVersionRegistered it was projected from. The monitor's verdicts about the version
-- (DriftDetected, CanaryHealthy, ModelDegraded) carry them, so a rollback and its alert are
-- found by the version's lifecycle id, and its trace continues the lifecycle's.
ALTER TABLE versions ADD COLUMN correlation_id text;
ALTER TABLE versions ADD COLUMN traceparent text;
