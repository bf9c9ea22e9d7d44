"""The runtime half of a service's composition root.

A service's ``app.py`` builds one ``ServiceRuntime``, registers its handlers and (optionally) an
HTTP API, and calls ``run()``. The runtime owns everything that is the same in every service:
settings, logging, tracing, the PostgreSQL pool and migrations, the durable producer, the
FastStream broker with its single manual-commit subscriber, the outbox relay, the DLQ and the
/healthz, /readyz and /metrics endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError
from faststream.kafka.annotations import KafkaMessage
from starlette.routing import Mount
from starlette.types import ASGIApp

from mlcp.contracts import dlq_topic
from mlcp.runtime.batch import BatchConsumer, BatchHandler
from mlcp.runtime.broker import AssignmentTracker, durable_subscriber_options, make_broker
from mlcp.runtime.bus import TopicLayout
from mlcp.runtime.consumer import DurableConsumer, Handler, Tx
from mlcp.runtime.db import TRANSIENT_DB_ERRORS, create_pool
from mlcp.runtime.dlq import DeadLetterWriter
from mlcp.runtime.health import health_app
from mlcp.runtime.http_tracing import ServerSpans
from mlcp.runtime.internal import InternalOnly, parse_networks
from mlcp.runtime.kafka import check_access, describe_principal, durable_producer, make_admin
from mlcp.runtime.logs import setup_logging
from mlcp.runtime.metrics import RuntimeMetrics
from mlcp.runtime.migrations import load_migrations, migrate, runtime_migrations
from mlcp.runtime.outbox import OutboxRelay
from mlcp.runtime.retention import RetentionSweeper
from mlcp.runtime.settings import ConfigurationError, Settings
from mlcp.runtime.startup_logs import StartupNoiseFilter
from mlcp.runtime.startup_logs import install as install_startup_filter
from mlcp.runtime.telemetry import setup_tracing

log = logging.getLogger(__name__)

STOP_STEP_TIMEOUT_S = 15.0
"""Longest wait for the last offset commit and for closing the pool when a service stops."""


class _Server(uvicorn.Server):
    # uvicorn re-raises SIGTERM after serve() returns, which would kill the process before the
    # broker, relay and pool are closed. The runtime handles the signals itself.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class _Background:
    name: str
    task: Callable[[], Coroutine[Any, Any, None]]
    stop: Callable[[], None] | None
    grace_s: float


def _report_crash(task: asyncio.Task[None]) -> None:
    # A background loop is supposed to survive its own errors; if it dies, say so loudly.
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s died", task.get_name(), exc_info=task.exception())


class ServiceRuntime:
    """Shared plumbing of one mlcp service process."""

    def __init__(
        self,
        name: str,
        *,
        default_port: int,
        migrations_dir: Path | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or Settings()
        self.schema = self.settings.db_schema or name
        self.default_port = default_port
        self.migrations_dir = migrations_dir
        self.metrics = RuntimeMetrics(name)
        self.broker = make_broker(self.settings, name, self.metrics.registry)
        # One writer for every consumer of the process: one producer, the topics' limits.
        self.dead_letters = DeadLetterWriter(
            service=name, settings=self.settings, pool=lambda: self.pool
        )
        self.consumer = DurableConsumer(
            service=name,
            settings=self.settings,
            metrics=self.metrics,
            pool=lambda: self.pool,
            dead_letters=self.dead_letters,
            wake_relay=self.wake_relay,
        )
        self.assignments = AssignmentTracker(before_revoke=self.consumer.commit)
        self._batches: list[tuple[BatchConsumer, AssignmentTracker, dict[str, Any]]] = []
        self._background: list[_Background] = []
        self._background_tasks: list[tuple[_Background, asyncio.Task[None]]] = []
        self._shutdown: list[Callable[[], Awaitable[None]]] = []
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mounts: list[tuple[str, ASGIApp]] = []
        self._fronts: list[Callable[[ASGIApp], ASGIApp]] = []
        self._produced: list[str] = []
        self.http_port: int | None = None
        self._stopping = asyncio.Event()
        self._startup_noise: StartupNoiseFilter | None = None

    # -- wiring -------------------------------------------------------------------------------
    def on(self, event_type: str, handler: Handler) -> None:
        """Apply every ``event_type`` event with ``handler`` (inside the inbox transaction)."""
        self.consumer.add(event_type, handler)

    def on_batch(
        self,
        event_type: str,
        handler: BatchHandler,
        *,
        max_records: int = 1000,
        batch_timeout_ms: int = 100,
        linger_bytes: int = 1,
        linger_ms: int = 100,
    ) -> None:
        """Apply ``event_type`` in batches: ``handler(new_events, tx)``, one transaction a batch.

        For high-volume topics; each batch type gets its own consumer in the service's group.
        ``linger_bytes`` / ``linger_ms`` ask the broker to hold a fetch until that many bytes
        are there or that time has passed: under a steady trickle this trades a few
        milliseconds of latency for batches large enough to amortise the transaction.
        """
        consumer = BatchConsumer(
            event_type,
            handler,
            service=self.name,
            settings=self.settings,
            metrics=self.metrics,
            pool=lambda: self.pool,
            dead_letters=self.dead_letters,
            wake_relay=self.wake_relay,
        )
        tracker = AssignmentTracker(before_revoke=consumer.commit)
        options = {
            "max_records": max_records,
            "batch_timeout_ms": batch_timeout_ms,
            "fetch_min_bytes": linger_bytes,
            "fetch_max_wait_ms": linger_ms,
        }
        self._batches.append((consumer, tracker, options))

    def produces(self, event_type: str) -> None:
        """Wait at start until ``event_type``'s topic exists, as for a subscribed topic: for a
        topic this service writes and must find again (the registry reads its audit checkpoints
        back). ``mlcp bus apply`` creates it with the configuration its type needs; on a cluster
        without ACLs the service does."""
        self._produced.append(event_type)

    def background(
        self,
        name: str,
        task: Callable[[], Coroutine[Any, Any, None]],
        *,
        stop: Callable[[], None] | None = None,
        grace_s: float = 10.0,
    ) -> None:
        """Run ``task()`` beside the consumers once the service has started (a periodic sweep,
        a delivery loop). It must catch its own errors and go on. At stop, ``stop()`` (if given)
        asks it to finish and it gets ``grace_s`` seconds before it is cancelled; the database
        pool and producer are still open meanwhile."""
        self._background.append(_Background(name, task, stop, grace_s))

    def on_shutdown(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback()`` after everything else stopped (close an HTTP client …)."""
        self._shutdown.append(callback)

    def mount(self, path: str, app: ASGIApp, *, internal: bool = False) -> None:
        """Serve an extra ASGI app (for example the registry's API) beside /healthz; an
        ``internal`` one answers only clients in ``MLCP_INTERNAL_API_CLIENTS``."""
        if internal:
            app = InternalOnly(app, parse_networks(self.settings.internal_api_clients))
        self._mounts.append((path, app))

    def front(self, layer: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put ``layer(app)`` in front of all that is served (health, metrics, mounts): for a hot
        path that must skip Starlette's middleware and routing; it hands the rest to ``app``."""
        self._fronts.append(layer)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self.name}: the runtime is not started")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.name}: the runtime is not started")
        return self._producer

    @contextlib.asynccontextmanager
    async def transaction(self, correlationid: str | None = None) -> AsyncIterator[Tx]:
        """A transaction outside any handler (an API call) that can emit through the outbox."""
        async with self.pool.acquire() as conn, conn.transaction():
            tx = Tx(conn, service=self.name, settings=self.settings, correlationid=correlationid)
            yield tx
        if tx.emitted:
            self.wake_relay()

    def wake_relay(self) -> None:
        """Something this process emitted has committed: let the relay publish it now."""
        if self.relay is not None:
            self.relay.wake()

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, *, relay: bool = True) -> None:
        """Migrate, connect and start consuming; returns once the subscriber has started."""
        try:
            self._pool = await create_pool(
                self.settings.database_url,
                schema=self.schema,
                wait_s=self.settings.startup_timeout_s,
            )
        except TRANSIENT_DB_ERRORS as exc:
            raise ConfigurationError(
                f"PostgreSQL at MLCP_DATABASE_URL did not answer ({type(exc).__name__}: {exc})"
            ) from None
        except asyncpg.PostgresError as exc:
            raise ConfigurationError(f"PostgreSQL refused the connection: {exc}") from None
        async with self._pool.acquire() as conn:
            migrations = runtime_migrations()
            if self.migrations_dir is not None:
                migrations += load_migrations(self.migrations_dir)
            applied = await migrate(conn, self.schema, migrations)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        self._producer = await self._start_producer()
        await self.ensure_topics()
        self.relay = OutboxRelay(
            pool=self._pool,
            producer=self._producer,
            schema=self.schema,
            metrics=self.metrics,
            batch_size=self.settings.outbox_batch_size,
            poll_interval_s=self.settings.outbox_poll_interval_s,
        )
        if relay:
            self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-relay"))
        sweeper = RetentionSweeper(
            self._pool,
            self.metrics,
            inbox_days=self.settings.inbox_retention_days,
            outbox_days=self.settings.outbox_retention_days,
            interval_s=self.settings.retention_interval_s,
        )
        self._tasks.append(asyncio.create_task(sweeper.run(), name=f"{self.name}-retention"))
        consumers = self._subscribe_all()
        if consumers:
            await self.broker.start()
        for consumer in consumers:
            self._tasks.append(asyncio.create_task(consumer.run_commit_timer()))
        for job in self._background:
            task = asyncio.create_task(job.task(), name=f"{self.name}-{job.name}")
            task.add_done_callback(_report_crash)
            self._background_tasks.append((job, task))
        log.info("%s started: consuming %s", self.name, ", ".join(self._all_topics()) or "nothing")

    def _subscribe_all(self) -> list[DurableConsumer]:
        """Register the FastStream subscribers: one for single events, one per batch type."""
        consumers: list[DurableConsumer] = []
        options = durable_subscriber_options(self.settings, self.name)
        if self.consumer.topics:
            single = self.consumer

            async def handle(msg: KafkaMessage) -> None:
                await single.on_message(msg)

            self.broker.subscriber(*single.topics, listener=self.assignments, **options)(handle)
            consumers.append(single)
        for batch, tracker, batch_options in self._batches:
            self.broker.subscriber(
                *batch.topics, batch=True, listener=tracker, **batch_options, **options
            )(self._batch_entry(batch))
            consumers.append(batch)
        return consumers

    @staticmethod
    def _batch_entry(batch: BatchConsumer) -> Callable[[Any], Awaitable[None]]:
        async def handle_batch(msg: KafkaMessage) -> None:
            await batch.on_batch_message(msg)

        return handle_batch

    async def _start_producer(self) -> AIOKafkaProducer:
        # At boot Kafka may still be starting (compose, a restart): wait, then fail clearly.
        # Credentials or a certificate the brokers refuse are no reason to wait: exit 2 at once.
        wait_s = self.settings.startup_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        waiting = False
        while True:
            problem = await check_access(self.settings, timeout_s=min(10.0, wait_s))
            if problem is None:
                producer = durable_producer(self.settings, client_id=f"mlcp-{self.name}-outbox")
                try:
                    await producer.start()
                    return producer
                except KafkaError as exc:
                    await producer.stop()
                    problem = repr(exc)
            if loop.time() > deadline:
                raise ConfigurationError(
                    f"Kafka at MLCP_KAFKA_BOOTSTRAP={self.settings.kafka_bootstrap} did not "
                    f"answer {describe_principal(self.settings)} within {wait_s:.0f}s ({problem})"
                ) from None
            if not waiting:
                log.info("waiting for Kafka at %s (%s)", self.settings.kafka_bootstrap, problem)
                waiting = True
            await asyncio.sleep(1.0)

    async def ensure_topics(self) -> None:
        """Wait until the subscribed topics, their dead-letter topics and the topics declared
        with ``produces`` exist, then read the dead-letter topics' size limits (the dead letters
        are fitted to them).

        ``mlcp bus apply`` creates every topic with its ACLs and its configuration; on a cluster
        without ACLs the service creates what is missing itself, the same way. Subscribing to a
        missing topic would only log errors until someone creates it.
        """
        names = [t for topic in self._all_topics() for t in (topic, dlq_topic(topic))]
        names += [self.settings.topic(event_type) for event_type in self._produced]
        if not names:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup_timeout_s
        admin = make_admin(self.settings)
        await admin.start()
        said = False
        try:
            while True:
                existing = set(await admin.list_topics())
                missing = [n for n in names if n not in existing]
                if not missing or await self._create_topics(admin, missing):
                    break
                if loop.time() > deadline:
                    raise ConfigurationError(
                        f"topics missing and not ours to create: {', '.join(missing)}; run "
                        "`mlcp bus apply` as the cluster's admin (docs/security.md)"
                    )
                if not said:  # once: the wait itself is normal while the bus is being set up
                    log.info("waiting for topics %s (`mlcp bus apply` creates them)", missing)
                    said = True
                await asyncio.sleep(2.0)
            await self.dead_letters.learn_limits(admin, [dlq_topic(t) for t in self._all_topics()])
        finally:
            await admin.close()

    async def _create_topics(self, admin: AIOKafkaAdminClient, names: list[str]) -> bool:
        """Create ``names``; False when the cluster does not let this principal create them."""
        layout = TopicLayout(self.settings.topic_partitions, self.settings.topic_replication_factor)
        new = [layout.new_topic(n) for n in names]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return True
        except TopicAuthorizationFailedError:
            return False
        codes = {error[1] for error in getattr(response, "topic_errors", [])}
        # 29 TOPIC_AUTHORIZATION_FAILED, 31 CLUSTER_AUTHORIZATION_FAILED
        return not codes & {29, 31}

    def subscribed_topics(self) -> list[str]:
        """Every topic this service consumes (behind its prefix)."""
        return self._all_topics()

    def _all_topics(self) -> list[str]:
        return self.consumer.topics + [t for b, _, _ in self._batches for t in b.topics]

    def _consumers_assigned(self) -> bool:
        trackers = [self.assignments] if self.consumer.topics else []
        trackers += [tracker for _, tracker, _ in self._batches]
        return all(t.assigned for t in trackers)

    async def stop(self) -> None:
        """Stop consuming, then the relay (unsent rows wait in the outbox), then connections."""
        if self.broker.running:
            for consumer in [self.consumer, *(batch for batch, _, _ in self._batches)]:
                await self._bounded("the last offset commit", consumer.commit())
            await self.broker.stop()
        await self._stop_background()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.dead_letters.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._pool is not None:
            if not await self._bounded("closing the PostgreSQL pool", self._pool.close()):
                self._pool.terminate()  # a connection still in use: closed by force
            self._pool = None
        for callback in self._shutdown:
            try:
                await callback()
            except Exception:
                log.exception("shutdown callback failed")
        self._shutdown.clear()

    async def _bounded(self, what: str, step: Awaitable[None]) -> bool:
        """Await one step of ``stop`` for at most STOP_STEP_TIMEOUT_S; False if it was cut.

        aiokafka retries a commit for as long as the broker answers with a retriable error, and
        asyncpg's pool waits for every connection to be given back: either can hang a stop (a
        SIGTERM) for ever. Cutting them loses nothing: uncommitted records are read again and
        the inbox drops them."""
        try:
            await asyncio.wait_for(step, STOP_STEP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s did not finish in %.0f s; going on", what, STOP_STEP_TIMEOUT_S)
            return False
        return True

    async def _stop_background(self) -> None:
        for job, task in self._background_tasks:
            if job.stop is not None and not task.done():
                job.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(task), job.grace_s)
                except TimeoutError:
                    log.warning("%s did not finish in %.0fs; cancelling", job.name, job.grace_s)
                except Exception:
                    log.exception("%s failed while stopping", job.name)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background_tasks.clear()

    async def _database_ok(self) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT true"))

    async def _kafka_ok(self) -> bool:
        # A live connection to a known broker (reconnecting if needed); a full metadata
        # request took ~350 ms here, too slow for a probe that runs every few seconds.
        client = self.producer.client
        for broker in client.cluster.brokers():
            if await client.ready(broker.nodeId):
                return True
        return False

    async def _measure_lag(self) -> None:
        """Consumer lag per assigned partition: the partition's high watermark (from the last
        fetch) minus this consumer's position. Revoked partitions leave the gauge."""
        lag: dict[tuple[str, str], int] = {}
        for subscriber in self.broker.subscribers:
            consumer = getattr(subscriber, "consumer", None)
            if consumer is None:
                continue
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue  # nothing fetched yet: unknown, not zero
                position = await consumer.position(tp)
                lag[(tp.topic, str(tp.partition))] = max(highwater - position, 0)
        self.metrics.consumer_lag.clear()
        for (topic, partition), records in lag.items():
            self.metrics.consumer_lag.labels(topic, partition).set(records)

    def http_app(self) -> ASGIApp:
        """/healthz, /readyz, /metrics, plus mounted apps, behind the front layers."""

        async def consumer_ok() -> bool:
            return self._consumers_assigned()

        app = health_app(
            self.name,
            self.metrics.registry,
            {"database": self._database_ok, "kafka": self._kafka_ok, "consumer": consumer_ok},
            before_scrape=self._measure_lag,
        )
        for path, mounted in self._mounts:
            app.routes.append(Mount(path, app=mounted))
        served: ASGIApp = ServerSpans(app, app.routes)
        for layer in self._fronts:
            served = layer(served)
        return served

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        listener = self._bind_http()  # first: a taken port fails before any connection is made
        try:
            await self.start()
        except BaseException:
            listener.close()
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._settle_startup_logs(), name="settle-logs"))
        # httptools explicitly: uvicorn would fall back to the pure-Python h11 parser without a
        # word, which about doubled the registry's CPU per alias lookup (0.40 → 0.20 ms here).
        config = uvicorn.Config(
            self.http_app(), http="httptools", log_level="warning", access_log=False, lifespan="off"
        )
        server = _Server(config)
        # What start-up built (modules, app, clients) lives as long as the process. Frozen, it
        # leaves the collector's full passes, which otherwise walk ~100k objects: 80-130 ms
        # here, a stall for every request in flight (the registry's alias p99 at concurrency 8).
        gc.collect()
        gc.freeze()
        http = asyncio.create_task(server.serve(sockets=[listener]), name=f"{self.name}-http")
        self.http_port = listener.getsockname()[1]
        log.info("%s listening on http://%s:%d", self.name, self.settings.http_host, self.http_port)
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({http, stop}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await http
        await self.stop()
        log.info("%s stopped", self.name)

    async def _settle_startup_logs(self, grace_s: float = 2.0) -> None:
        """Once every consumer is assigned (and the last rebalance had ``grace_s`` to finish),
        Kafka's warnings are no longer start-up noise: let them through at their own level."""
        if self._startup_noise is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup_timeout_s
        while not self._consumers_assigned() and loop.time() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(grace_s)
        self._startup_noise.settle()

    def _bind_http(self) -> socket.socket:
        # Bound here rather than by uvicorn so that a taken port is a clear configuration error
        # (uvicorn would sys.exit inside its task) and port 0 tells us the port it got.
        port = self.settings.http_port if self.settings.http_port is not None else self.default_port
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
        # and without it every keep-alive response waits ~40 ms for the client's delayed ACK
        # (uvloop, which run() uses, sets it on every TCP connection; serve() under plain
        # asyncio, as in tests, needs this).
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.settings.http_host, port))
        except OSError as exc:
            listener.close()
            raise ConfigurationError(
                f"cannot listen on {self.settings.http_host}:{port} "
                f"(MLCP_HTTP_HOST / MLCP_HTTP_PORT): {exc.strerror}"
            ) from None
        listener.listen(128)
        listener.setblocking(False)
        return listener

    def run(self) -> None:
        """Blocking entry point for ``__main__``: logging, tracing, then ``serve``."""
        setup_logging(self.name, level=self.settings.log_level, fmt=self.settings.log_format)
        self._startup_noise = install_startup_filter()
        setup_tracing(self.name)
        # uvloop: the event loop's own share of every request and Kafka fetch is in C.
        uvloop.run(self.serve())
