"""Kafka admin calls aiokafka's admin client lacks: bulk ACLs, SCRAM credentials, and topic
configurations read and changed as plain mappings.

aiokafka ships the wire structs of CreateAcls / DescribeAcls / DeleteAcls but no admin method
for them (and its CreateAcls builder sends one ACL per request), and nothing at all for
AlterUserScramCredentials / DescribeUserScramCredentials (KIP-554). These are the Kafka protocol
messages of those APIs, sent through an ``AIOKafkaAdminClient`` built by ``mlcp.runtime.kafka``,
so they authenticate like every other client. Versions: ACLs v1 (the oldest Kafka 4 accepts,
KIP-896), SCRAM v0 (flexible encoding).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, ClassVar, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)

from mlcp.policy.acl import AclBinding

ResourceType = Literal["topic", "group", "cluster"]
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "ALTER", "DELETE", "IDEMPOTENT_WRITE"]

_RESOURCE = {"any": 1, "topic": 2, "group": 3, "cluster": 4}
_RESOURCE_NAME = {code: name for name, code in _RESOURCE.items()}
_OPERATION = {
    "ANY": 1,
    "ALL": 2,
    "READ": 3,
    "WRITE": 4,
    "CREATE": 5,
    "DELETE": 6,
    "ALTER": 7,
    "DESCRIBE": 8,
    "CLUSTER_ACTION": 9,
    "DESCRIBE_CONFIGS": 10,
    "ALTER_CONFIGS": 11,
    "IDEMPOTENT_WRITE": 12,
}
_OPERATION_NAME = {code: name for name, code in _OPERATION.items()}
_PATTERN_ANY, _PATTERN_LITERAL, _PATTERN_PREFIXED = 1, 3, 4
_ALLOW = 3
_DENY = 2
_PERMISSION_ANY = 1
SCRAM_MECHANISMS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}
SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096; its default is 4096


class KafkaAdminError(RuntimeError):
    """The cluster refused an admin request; the message carries Kafka's own error."""


# -- the wire structs --------------------------------------------------------------------
class _CreateAclsResponseV1(Response):
    API_KEY = 30
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(("error_code", Int16), ("error_message", String("utf-8")))),
    )


class _CreateAclsRequestV1(RequestStruct):
    API_KEY = 30
    API_VERSION = 1
    RESPONSE_TYPE = _CreateAclsResponseV1
    SCHEMA = Schema(
        (
            "creations",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("pattern_type", Int8),
                ("principal", String("utf-8")),
                ("host", String("utf-8")),
                ("operation", Int8),
                ("permission_type", Int8),
            ),
        ),
    )


_FILTER = (
    ("resource_type", Int8),
    ("resource_name", String("utf-8")),
    ("pattern_type", Int8),
    ("principal", String("utf-8")),
    ("host", String("utf-8")),
    ("operation", Int8),
    ("permission_type", Int8),
)


class _DescribeAclsResponseV1(Response):
    API_KEY = 29
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", String("utf-8")),
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                ("pattern_type", Int8),
                (
                    "acls",
                    Array(
                        ("principal", String("utf-8")),
                        ("host", String("utf-8")),
                        ("operation", Int8),
                        ("permission_type", Int8),
                    ),
                ),
            ),
        ),
    )


class _DescribeAclsRequestV1(RequestStruct):
    API_KEY = 29
    API_VERSION = 1
    RESPONSE_TYPE = _DescribeAclsResponseV1
    SCHEMA = Schema(*_FILTER)


class _DeleteAclsResponseV1(Response):
    API_KEY = 31
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "filter_results",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                (
                    "matching_acls",
                    Array(
                        ("error_code", Int16),
                        ("error_message", String("utf-8")),
                        *_FILTER,
                    ),
                ),
            ),
        ),
    )


class _DeleteAclsRequestV1(RequestStruct):
    API_KEY = 31
    API_VERSION = 1
    RESPONSE_TYPE = _DeleteAclsResponseV1
    SCHEMA = Schema(("filters", Array(*_FILTER)))


class _AlterScramResponseV0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramRequestV0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponseV0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _DescribeScramResponseV0(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                (
                    "credential_infos",
                    CompactArray(
                        ("mechanism", Int8), ("iterations", Int32), ("tags", TaggedFields)
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _DescribeScramRequestV0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeScramResponseV0
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class _Fixed(Request[Any]):
    """A request whose struct is already built (one version, negotiated by the caller)."""

    API_KEY: ClassVar[int] = -1
    ALLOW_UNKNOWN_API_VERSION: ClassVar[bool] = True
    _CLASSES = (RequestStruct,)

    def __init__(self, struct: RequestStruct) -> None:
        self._struct = struct

    def prepare(self, versions: dict[int, tuple[int, int]]) -> Any:
        low, high = versions.get(self._struct.API_KEY, (0, -1))
        if not low <= self._struct.API_VERSION <= high:
            raise KafkaAdminError(
                f"the broker does not support {type(self._struct).__name__.strip('_')} "
                f"(API {self._struct.API_KEY} v{self._struct.API_VERSION}; it offers "
                f"v{low}..v{high})"
            )
        return self._struct

    def build(self, request_struct_class: Any) -> Any:  # pragma: no cover - prepare() builds
        return self._struct


async def _send(admin: AIOKafkaAdminClient, struct: RequestStruct) -> Any:
    # The controller decides ACL and SCRAM changes; any broker forwards them (KIP-590), so the
    # least loaded node will do.
    return await admin._send_request(_Fixed(struct))


def _raise_for(error_code: int, message: str | None, what: str) -> None:
    if error_code:
        from aiokafka.errors import for_code

        name = for_code(error_code).__name__
        raise KafkaAdminError(f"{what}: {name} ({error_code}){f': {message}' if message else ''}")


# -- ACLs --------------------------------------------------------------------------------
def _binding_row(binding: AclBinding, permission: int = _ALLOW) -> tuple[Any, ...]:
    return (
        _RESOURCE[binding.resource_type],
        binding.resource_name,
        _PATTERN_PREFIXED if binding.prefixed else _PATTERN_LITERAL,
        binding.principal,
        "*",
        _OPERATION[binding.operation],
        permission,
    )


async def create_acls(admin: AIOKafkaAdminClient, bindings: list[AclBinding]) -> None:
    """Create ALLOW ACLs (creating an existing one is a no-op in Kafka)."""
    for start in range(0, len(bindings), 500):
        chunk = bindings[start : start + 500]
        response = await _send(admin, _CreateAclsRequestV1([_binding_row(b) for b in chunk]))
        for binding, (code, message) in zip(chunk, response.results, strict=True):
            _raise_for(code, message, f"creating ACL {binding.describe()}")


async def describe_acls(admin: AIOKafkaAdminClient) -> set[AclBinding]:
    """Every ALLOW ACL for any host on topics, groups and the cluster (DENY ones raise: mlcp
    never writes them, so finding one means someone else manages this cluster's ACLs)."""
    response = await _send(
        admin, _DescribeAclsRequestV1(1, None, _PATTERN_ANY, None, None, 1, _PERMISSION_ANY)
    )
    _raise_for(response.error_code, response.error_message, "describing ACLs")
    found: set[AclBinding] = set()
    for resource_type, name, pattern, acls in response.resources:
        for principal, host, operation, permission in acls:
            if permission == _DENY or host != "*":
                raise KafkaAdminError(
                    f"the cluster has an ACL mlcp does not manage: {principal} "
                    f"{_OPERATION_NAME.get(operation, operation)} on {name!r} from {host} "
                    f"({'DENY' if permission == _DENY else 'ALLOW'})"
                )
            found.add(
                AclBinding(
                    _RESOURCE_NAME.get(resource_type, str(resource_type)),
                    name,
                    principal,
                    _OPERATION_NAME.get(operation, str(operation)),
                    prefixed=pattern == _PATTERN_PREFIXED,
                )
            )
    return found


async def delete_acls(admin: AIOKafkaAdminClient, bindings: list[AclBinding]) -> None:
    """Delete exactly these ALLOW ACLs."""
    for start in range(0, len(bindings), 500):
        chunk = bindings[start : start + 500]
        response = await _send(admin, _DeleteAclsRequestV1([_binding_row(b) for b in chunk]))
        for binding, (code, message, _matches) in zip(chunk, response.filter_results, strict=True):
            _raise_for(code, message, f"deleting ACL {binding.describe()}")


# -- SCRAM credentials -------------------------------------------------------------------
def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """SCRAM's SaltedPassword: Hi(password, salt, i) of RFC 5802, which is PBKDF2-HMAC."""
    digest = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)


async def upsert_scram_user(
    admin: AIOKafkaAdminClient, user: str, password: str, mechanism: str = "SCRAM-SHA-512"
) -> None:
    """Create the user's SCRAM credential, or replace its password (the old one stops working
    for new connections at once)."""
    salt = secrets.token_bytes(32)
    salted = salted_password(mechanism, password, salt, SCRAM_ITERATIONS)
    row: tuple[Any, ...] = (user, SCRAM_MECHANISMS[mechanism], SCRAM_ITERATIONS, salt, salted, {})
    response = await _send(admin, _AlterScramRequestV0([], [row], {}))
    for name, code, message, _tags in response.results:
        _raise_for(code, message, f"setting the SCRAM credential of {name!r}")


async def scram_users(admin: AIOKafkaAdminClient, mechanism: str = "SCRAM-SHA-512") -> set[str]:
    """The users that have a credential for ``mechanism``."""
    response = await _send(admin, _DescribeScramRequestV0(None, {}))
    _raise_for(response.error_code, response.error_message, "describing SCRAM users")
    wanted = SCRAM_MECHANISMS[mechanism]
    return {
        user
        for user, code, _message, infos, _tags in response.results
        if not code and any(m == wanted for m, _i, _t in infos)
    }


# -- topic configurations ----------------------------------------------------------------
_DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself


async def topic_configs(
    admin: AIOKafkaAdminClient, topics: list[str]
) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """topic → (effective configuration, the part of it set on the topic itself)."""
    if not topics:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
    )
    found: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for response in responses:
        for code, message, _type, name, entries in response.resources:
            _raise_for(code, message, f"describing the configuration of topic {name!r}")
            effective = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
            # v0 answers is_default in place of config_source; Kafka 4 speaks v1 and later.
            dynamic = {
                entry[0]: entry[1]
                for entry in entries
                if entry[1] is not None and entry[3] == _DYNAMIC_TOPIC_CONFIG
            }
            found[name] = (effective, dynamic)
    return found


async def set_topic_configs(admin: AIOKafkaAdminClient, configs: dict[str, dict[str, str]]) -> None:
    """Make ``configs[topic]`` the whole set of configurations set on each topic (AlterConfigs
    replaces it: pass what should stay along with what changes)."""
    if not configs:
        return
    responses = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, values) for t, values in configs.items()]
    )
    for response in responses:
        for code, message, _type, name in response.resources:
            _raise_for(code, message, f"changing the configuration of topic {name!r}")
