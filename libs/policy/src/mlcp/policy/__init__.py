"""mlcp's business policy as pure data: what the platform YAML says and who may use the bus.

Every module here imports only the standard library, pydantic, PyYAML and the contracts: a
service's ``domain.py`` may import them without loading Kafka, PostgreSQL or HTTP clients.
"""
