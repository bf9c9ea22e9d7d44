-- Every event a catalog-wide test consumer applied (no uniqueness: a duplicate shows as two rows).
CREATE TABLE applied (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    event_id   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
