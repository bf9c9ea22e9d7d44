"""Client benchmark: what mlcp.client adds to one request (route + log), model excluded.

Each request routes a key through the canary split (BLAKE2b bucket) and logs the prediction
(20 float features) into the prediction logger, whose flusher sends Arrow batches of 1,000 rows
to the real bus (dev stack, as ``inference``) in the same event loop; the time of both calls is
taken per request. Target (issue 20): p99 ≤ 50 µs. Full: 200,000 requests; ``--quick``: 50,000.

    uv run python bench/client_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

from mlcp.client import ClientSettings, PredictionLogger, Split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bus, cli, drop_topics, finish, measure, percentile, prepare_bus

FEATURES = {f"f{i}": float(i) / 7 for i in range(20)}


def client_settings(prefix: str) -> ClientSettings:
    settings = bus("inference", prefix)
    return ClientSettings(
        kafka_bootstrap=settings.kafka_bootstrap,
        kafka_security_protocol=settings.kafka_security_protocol,
        kafka_sasl_mechanism=settings.kafka_sasl_mechanism,
        kafka_username=settings.kafka_username,
        kafka_password=settings.kafka_secret(),
        kafka_ca_file=settings.kafka_ca_file,
        topic_prefix=prefix,
    )


async def main(quick: bool, json_path: Path | None) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    await prepare_bus(prefix)
    n = 50_000 if quick else 200_000
    logger = PredictionLogger(client_settings(prefix), "churn", batch_rows=1000, max_age_s=0.5)
    await logger.start()
    split = Split("1.0.0", "1.1.0", 10)
    costs: list[float] = []
    try:
        for i in range(n):
            started = time.perf_counter_ns()
            alias, version = split.route(f"user-{i % 10_000}")
            logger.log(
                request_id=f"r{i}", version=version, alias=alias, features=FEATURES,
                prediction=1, probability=0.9, latency_ms=0.5,
            )  # fmt: skip
            costs.append((time.perf_counter_ns() - started) / 1000)
            if i % 200 == 0:
                await asyncio.sleep(0)  # the flusher runs between requests, as in a server
        await logger.close()
    finally:
        await drop_topics(prefix)
    p50, p99 = percentile(costs, 50), percentile(costs, 99)
    row = measure(
        "client_overhead",
        "client overhead per request (route + log), p99",
        p99,
        "µs",
        "lower",
        f"{n} requests, 20 float features, batches of 1,000 to the real bus; "
        f"sent {logger.stats.sent}, dropped {logger.stats.dropped}",
        target="p99 ≤ 50 µs",
        met=p99 <= 50,
        extra={"p50_us": p50, "p99_us": p99},
        note=f"p50 {p50:.1f} µs",
    )
    finish([row], json_path)


if __name__ == "__main__":
    cli(__doc__ or "", main)
