"""The bus's access policy (``acls.yaml``): who may write and read each topic, as pure data.

From the one file come the Kafka ACLs (``bindings``) that ``mlcp bus apply`` puts on the
cluster and the CloudEvents sources each consumer accepts (``allowed_sources``): the broker
refuses a principal that may not write a topic, and a consumer refuses an event whose
``source`` is not the topic's owner even when the principal may write it. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlcp.contracts.topics import dlq_topic


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW ACL on a literally named resource, for any host."""

    resource_type: str
    resource_name: str
    principal: str  # "User:svc-registry"
    operation: str
    prefixed: bool = False

    def describe(self) -> str:
        kind = "prefix " if self.prefixed else ""
        return (
            f"{self.principal} {self.operation} {self.resource_type} {kind}{self.resource_name!r}"
        )


SERVICE_PRINCIPAL_PREFIX = "svc-"
SERVICE_SOURCE_PREFIX = "mlcp/"


class PolicyError(ValueError):
    """The ACL file is not valid; the message names the place."""


class Principal(BaseModel):
    """A bus identity (a SCRAM user)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]*$")
    role: Literal["service", "producer", "operator", "admin"] = "service"
    about: str = ""

    @model_validator(mode="after")
    def _service_role(self) -> Principal:
        if (self.service is None) == (self.role == "service"):
            raise ValueError("a principal has `service: NAME` exactly when its role is service")
        return self


class TopicAccess(BaseModel):
    """Who may write a topic and who reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    write: tuple[str, ...] = Field(min_length=1)
    read: tuple[str, ...] = ()
    read_without_group: tuple[str, ...] = ()


class BusPolicy(BaseModel):
    """The whole ACL file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    principals: dict[str, Principal]
    topics: dict[str, TopicAccess]

    @model_validator(mode="after")
    def _references(self) -> BusPolicy:
        for name, principal in self.principals.items():
            if (
                principal.service is not None
                and name != SERVICE_PRINCIPAL_PREFIX + principal.service
            ):
                raise ValueError(f"principal {name}: a service's principal is svc-<service>")
        if sum(p.role == "admin" for p in self.principals.values()) != 1:
            raise ValueError("exactly one principal has role admin (the cluster's super user)")
        for topic, access in self.topics.items():
            for field in ("write", "read", "read_without_group"):
                for who in getattr(access, field):
                    if who not in self.principals:
                        raise ValueError(f"topics.{topic}.{field}: unknown principal {who!r}")
                    if self.principals[who].role in ("admin", "operator"):
                        raise ValueError(
                            f"topics.{topic}.{field}: {who} is {self.principals[who].role}; "
                            "its access follows from its role"
                        )
            for who in access.read:
                if self.principals[who].service is None:
                    raise ValueError(
                        f"topics.{topic}.read: {who} is not a service (groups are per "
                        "service): list it under read_without_group"
                    )
        return self

    # -- what follows from the file --------------------------------------------------------------
    @property
    def admin(self) -> str:
        """The super user's name."""
        return next(name for name, p in self.principals.items() if p.role == "admin")

    def service_of(self, principal: str) -> str | None:
        found = self.principals.get(principal)
        return found.service if found else None

    def allowed_sources(self, topic: str) -> frozenset[str] | None:
        """The CloudEvents sources a consumer accepts on ``topic`` (unprefixed); None: any."""
        access = self.topics.get(topic)
        if access is None:
            return None
        services = [self.service_of(who) for who in access.write]
        if any(service is None for service in services):
            return None  # pipelines and inference services name themselves
        return frozenset(f"{SERVICE_SOURCE_PREFIX}{service}" for service in services)

    def topic_names(self, prefix: str = "") -> list[str]:
        """Every topic of the file and its dead-letter topic, behind ``prefix``."""
        return [name for t in self.topics for name in (prefix + t, dlq_topic(prefix + t))]

    def group_names(self, prefix: str = "") -> list[str]:
        """The consumer group of every service that reads in a group."""
        services = sorted(
            {self.service_of(who) or "" for access in self.topics.values() for who in access.read}
        )
        return [group_id(prefix, service) for service in services]

    def bindings(self, prefix: str = "") -> set[AclBinding]:
        """The Kafka ACLs this file grants, for topics and groups behind ``prefix``."""
        out: set[AclBinding] = set()
        operators = [n for n, p in self.principals.items() if p.role == "operator"]

        def allow(kind: str, name: str, who: str, operation: str) -> None:
            out.add(AclBinding(kind, name, f"User:{who}", operation))

        for topic, access in self.topics.items():
            name = prefix + topic
            for who in access.write:
                allow("topic", name, who, "WRITE")
            for who in access.read:
                allow("topic", name, who, "READ")
                allow("group", group_id(prefix, self.service_of(who) or ""), who, "READ")
                allow("topic", dlq_topic(name), who, "WRITE")
                # Dead letters are fitted to the DLQ's own max.message.bytes, read at start.
                allow("topic", dlq_topic(name), who, "DESCRIBE_CONFIGS")
            for who in access.read_without_group:
                allow("topic", name, who, "READ")
            for who in operators:
                allow("topic", name, who, "READ")
                allow("topic", dlq_topic(name), who, "READ")
        return out

    def managed(self, prefix: str = "") -> set[tuple[str, str]]:
        """The (resource type, name) pairs this file governs: ACLs on them not in the file are
        removed by ``mlcp bus apply``; ACLs on anything else are left alone."""
        return {("topic", n) for n in self.topic_names(prefix)} | {
            ("group", g) for g in self.group_names(prefix)
        }


def group_id(prefix: str, service: str) -> str:
    """A service's consumer group behind ``prefix`` (``Settings.group_id`` says the same)."""
    return f"{prefix}mlcp-{service}"


def parse_policy(text: str, *, source: str) -> BusPolicy:
    """Validate the ACL file's text; ``PolicyError`` names the bad place."""
    try:
        raw = yaml.safe_load(text)
        return BusPolicy.model_validate(raw)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not YAML: {exc}") from None
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        ]
        raise PolicyError(f"{source}: invalid ACL file:\n  " + "\n  ".join(lines)) from None


DEFAULT_POLICY_FILE = "acls.yaml"


def default_policy_text() -> str:
    """The ACL file that ships with mlcp (``mlcp/policy/acls.yaml``)."""
    return resources.files("mlcp.policy").joinpath(DEFAULT_POLICY_FILE).read_text()


@lru_cache(maxsize=4)
def load_policy(path: Path | None = None) -> BusPolicy:
    """The ACL file at ``path`` (``MLCP_ACL_FILE``), or the one that ships with mlcp."""
    if path is None:
        return parse_policy(default_policy_text(), source="mlcp/policy/acls.yaml")
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise PolicyError(f"MLCP_ACL_FILE={path}: {exc.strerror or exc}") from None
    return parse_policy(text, source=f"MLCP_ACL_FILE={path}")


def describe(bindings: Iterable[AclBinding]) -> list[str]:
    """One sorted line per ACL, for diffs and logs."""
    return sorted(b.describe() for b in bindings)
