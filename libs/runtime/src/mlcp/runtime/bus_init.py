"""``python -m mlcp.runtime.bus_init CREDENTIALS_DIR``: make a new cluster ready for mlcp.

Runs as the cluster's super user (the MLCP_KAFKA_* settings): gives every principal of the ACL
file its SCRAM-SHA-512 credential from ``CREDENTIALS_DIR/<principal>`` (a random password for a
missing file), then creates the topics and applies the ACLs. Idempotent: docker-compose runs it
as a one-shot before the services start; ``mlcp bus init`` is the same from the CLI.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mlcp.policy.acl import PolicyError, load_policy
from mlcp.runtime.bus import TopicLayout, init_cluster
from mlcp.runtime.kafka import check_access
from mlcp.runtime.settings import ConfigurationError, load_settings


async def _main(credentials: Path) -> int:
    settings = load_settings()
    policy = load_policy(settings.acl_file)
    deadline = asyncio.get_running_loop().time() + settings.startup_timeout_s
    while (problem := await check_access(settings)) is not None:
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigurationError(f"Kafka did not answer: {problem}")
        await asyncio.sleep(1.0)
    layout = TopicLayout(settings.topic_partitions, settings.topic_replication_factor)
    done = await init_cluster(
        settings, policy, credentials, layout=layout, prefix=settings.topic_prefix
    )
    for line in done.lines():
        print(line)
    print(f"bus ready: {len(policy.principals)} principals, credentials in {credentials}")
    return 0


def main() -> None:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    try:
        raise SystemExit(asyncio.run(_main(Path(sys.argv[1]))))
    except (ConfigurationError, PolicyError, ValueError) as exc:
        print(f"mlcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
