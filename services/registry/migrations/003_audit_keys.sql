-- The audit chain becomes keyed: each new row's hash is an HMAC under the registry's audit key
-- (never in the database), named by key_id. Rows written before have key_id NULL and keep their
-- unkeyed sha256 hashes; the first keyed row after them seals them (mlcp.registry.chain).
ALTER TABLE audit_log ADD COLUMN key_id text;
