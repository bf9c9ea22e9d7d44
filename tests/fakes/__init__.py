"""In-memory stand-ins for a service's store and transaction, for millisecond unit tests of
handler decisions. Never used by a test that claims to test Kafka or PostgreSQL."""
