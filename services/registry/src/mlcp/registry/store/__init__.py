"""SQL of the registry on asyncpg, one module per aggregate: ``versions`` (models and their
versions), ``rollouts`` (rollout state and aliases with their history), ``tokens`` (API tokens
and grants), ``audit_log`` (the keyed audit chain).

Every function takes the caller's connection (inside its transaction) and returns typed values
or plain JSON-ready dicts (read views); JSON columns are encoded and decoded here so the rest
of the service never sees SQL types. Tables live in the service's schema (the pool's
search_path). The handlers and the API depend on these modules through the protocols of
``mlcp.registry.ports``.
"""
