"""``mlcp bus``: put the ACL file on a cluster, see the difference, print the policy — and the
bus settings every CLI command connects with."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from mlcp.runtime.settings import Settings

T = TypeVar("T")

bus_app = typer.Typer(
    help="The bus's topics and ACLs (docs/security.md). Runs as the cluster's admin principal.",
    no_args_is_help=True,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3


def cli_settings(principal: str) -> Settings:
    """Settings for a CLI command that acts as ``principal`` on the bus.

    The MLCP_KAFKA_* variables decide. When they name no user and the dev stack of this
    machine runs on the bootstrap address, the command uses that stack's credentials for
    ``principal`` (the files only this user can read), so `mlcp events tail` works on a
    developer's machine without exports.
    """
    from mlcp.runtime.settings import ConfigurationError, load_settings

    try:
        if not os.environ.get("MLCP_KAFKA_USERNAME") and not _plaintext_asked():
            dev = _dev_stack_env(principal)
            if dev is not None:
                from mlcp.runtime.settings import settings_from_env

                # Everything else (topic prefix, …) from the environment as usual.
                return settings_from_env({**os.environ, **dev})
        return load_settings()
    except ConfigurationError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_CONFIG) from None


def _plaintext_asked() -> bool:
    return os.environ.get("MLCP_KAFKA_SECURITY_PROTOCOL", "").upper() in ("PLAINTEXT", "SSL")


def _dev_stack_env(principal: str) -> dict[str, str] | None:
    from mlcp.devstack import DevstackError, current

    try:
        info = current()
    except DevstackError:
        return None
    if info.credentials_dir is None or not (info.credentials_dir / principal).is_file():
        return None
    wanted = os.environ.get("MLCP_KAFKA_BOOTSTRAP")
    if wanted and wanted not in (info.bootstrap, info.tls_bootstrap):
        return None
    tls = bool(wanted) and wanted == info.tls_bootstrap
    return info.env(principal, tls=tls)


def _fail_on_bus_error(exc: Exception) -> typer.Exit:
    from mlcp.runtime.settings import ConfigurationError

    if isinstance(exc, ConfigurationError):
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        return typer.Exit(EXIT_CONFIG)
    err.print(f"[bold red]Kafka unreachable or refusing:[/] {escape(str(exc) or repr(exc))}")
    return typer.Exit(EXIT_UNREACHABLE)


AclFile = Annotated[
    Path | None,
    typer.Option(
        "--acl-file",
        envvar="MLCP_ACL_FILE",
        help="The ACL file (default: the one that ships with mlcp, mlcp/policy/acls.yaml).",
    ),
]
Prefix = Annotated[
    str, typer.Option(help="Topic prefix (MLCP_TOPIC_PREFIX) of the tenant to apply it for.")
]


def _policy(acl_file: Path | None):  # type: ignore[no-untyped-def]
    from mlcp.policy.acl import PolicyError, load_policy

    try:
        return load_policy(acl_file)
    except PolicyError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_CONFIG) from None


@bus_app.command()
def apply(
    acl_file: AclFile = None,
    prefix: Prefix = "",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of new topics.")] = 3,
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Replicas of new topics (3 in production).")
    ] = 1,
    min_insync_replicas: Annotated[
        int | None, typer.Option(min=1, help="min.insync.replicas of new topics (2 in production).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, change nothing.")] = False,
) -> None:
    """Create the missing topics, set the configuration their event types need (the audit
    checkpoints' retention) and make the ACLs of mlcp's topics and groups exactly what the file
    grants (idempotent). ACLs on other resources are never touched."""
    from mlcp.runtime.bus import TopicLayout
    from mlcp.runtime.bus import apply as apply_policy

    policy = _policy(acl_file)
    settings = cli_settings(policy.admin)
    layout = TopicLayout(partitions, replication_factor, min_insync_replicas)
    try:
        result = asyncio.run(
            apply_policy(settings, policy, prefix=prefix, layout=layout, dry_run=dry_run)
        )
    except Exception as exc:
        raise _fail_on_bus_error(exc) from None
    for line in result.lines():
        out.print(line, markup=False)
    verb = "would change" if dry_run else "changed"
    summary = (
        f"{len(result.missing_topics)} topics, {len(result.configs)} topic configurations, "
        f"{len(result.add)} ACLs to add, {len(result.remove)} to remove"
    )
    err.print("in step with the file: nothing to do" if result.empty else f"{verb}: {summary}")


@bus_app.command()
def init(
    credentials: Annotated[
        Path, typer.Argument(help="Directory with one password file per principal.")
    ],
    acl_file: AclFile = None,
    prefix: Prefix = "",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of new topics.")] = 3,
    replication_factor: Annotated[int, typer.Option(min=1, help="Replicas of new topics.")] = 1,
) -> None:
    """Make a new cluster ready: every principal's SCRAM-SHA-512 credential from
    CREDENTIALS/<principal> (a random password, written 0600, for a missing file), then the
    topics and ACLs (`apply`). Idempotent; run it as the cluster's super user."""
    from mlcp.runtime.bus import TopicLayout, init_cluster

    policy = _policy(acl_file)
    settings = cli_settings(policy.admin)
    layout = TopicLayout(partitions, replication_factor)
    try:
        result = asyncio.run(
            init_cluster(settings, policy, credentials, layout=layout, prefix=prefix)
        )
    except Exception as exc:
        raise _fail_on_bus_error(exc) from None
    for line in result.lines():
        out.print(line, markup=False)
    err.print(
        f"{len(policy.principals)} principals set from {credentials}; topics and ACLs applied"
    )


@bus_app.command()
def diff(acl_file: AclFile = None, prefix: Prefix = "") -> None:
    """What `mlcp bus apply` would change; exit code 1 when the cluster differs from the file."""
    from mlcp.runtime.bus import apply as apply_policy

    policy = _policy(acl_file)
    settings = cli_settings(policy.admin)
    try:
        result = asyncio.run(apply_policy(settings, policy, prefix=prefix, dry_run=True))
    except Exception as exc:
        raise _fail_on_bus_error(exc) from None
    for line in result.lines():
        out.print(line, markup=False)
    if not result.empty:
        raise typer.Exit(1)
    err.print("in step with the file")


@bus_app.command()
def acls(acl_file: AclFile = None) -> None:
    """Print the policy as a table: who writes and who reads each topic (no cluster needed)."""
    policy = _policy(acl_file)
    table = Table(title="mlcp bus ACLs (operator reads everything; admin is the super user)")
    for column in ("topic", "written by", "source accepted", "read in own group by", "read by"):
        table.add_column(column)
    for topic, access in policy.topics.items():
        sources = policy.allowed_sources(topic)
        table.add_row(
            topic,
            ", ".join(access.write),
            ", ".join(sorted(sources)) if sources else "any",
            ", ".join(access.read) or "-",
            ", ".join(access.read_without_group) or "-",
        )
    out.print(table)


def run_on_bus(settings: Settings, work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)``; a Kafka failure becomes one clear line: exit 2 when the brokers
    refuse these credentials (or this CA), 3 when they cannot be reached."""
    from aiokafka.errors import KafkaError

    from mlcp.runtime.kafka import check_access
    from mlcp.runtime.settings import ConfigurationError

    try:
        return asyncio.run(work)
    except (KafkaError, OSError, TimeoutError) as exc:
        try:
            problem = asyncio.run(check_access(settings, timeout_s=5.0))
        except ConfigurationError as refused:
            raise _fail_on_bus_error(refused) from None
        raise _fail_on_bus_error(
            RuntimeError(f"{settings.kafka_bootstrap}: {problem or exc!r}")
        ) from None
    except ConfigurationError as exc:
        raise _fail_on_bus_error(exc) from None
