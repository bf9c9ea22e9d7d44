-- The W3C traceparent of the registration that started the candidate: decisions that arrive
-- later (approvals through the registry API, CI reports, deadline sweeps) continue the
-- lifecycle's trace from here (mlcp.runtime.telemetry.resume_trace).
ALTER TABLE candidates ADD COLUMN traceparent text;
