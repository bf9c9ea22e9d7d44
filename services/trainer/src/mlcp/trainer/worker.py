"""The training worker: claims queued runs, trains each in a child process, records the outcome.

The TrainingRequested handler only queues a run (one per request id, in the inbox transaction),
so the Kafka consumer never waits for a training. Workers — one or more tasks per trainer
instance, any number of instances — claim runs with ``FOR UPDATE SKIP LOCKED`` and a lease:

* the training runs in a spawned child process with a timeout: a hang is killed, a crash
  (segfault, ``os._exit``, OOM kill) is a RunFailed, the worker itself carries on;
* the worker renews its lease while the child runs; if the whole trainer is killed, the lease
  expires and another worker (or the restarted one) claims the run again, up to
  ``max_attempts`` times, after which it is marked failed — never lost;
* the result is recorded with ``WHERE attempt = <ours>`` (a fencing token) in the same
  transaction as the RunFinished outbox row, so a run is completed at most once even if a
  worker that lost its lease comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlcp.artifacts import ArtifactLimits
from mlcp.contracts import CloudEvent, RunFailed, RunStarted, decode_event
from mlcp.policy.platform import PlatformConfig
from mlcp.runtime import ServiceRuntime, Tx
from mlcp.runtime.db import TRANSIENT_DB_ERRORS
from mlcp.runtime.telemetry import resume_trace
from mlcp.trainer import runs
from mlcp.trainer.runs import ChildOutcome, ClaimedRun, Failed, Finished
from mlcp.trainer.stores import Stores
from mlcp.trainer.training import ArtifactSpec, BatchSpec, JobSpec

log = logging.getLogger(__name__)


class WorkerSettings(BaseSettings):
    """Trainer-only settings (environment ``MLCP_TRAINER_*``)."""

    model_config = SettingsConfigDict(env_prefix="MLCP_TRAINER_", extra="ignore", frozen=True)

    workers: int = Field(1, ge=0, le=64)
    """Concurrent trainings per instance (0: this instance only triggers, never trains)."""
    train_timeout_s: float = Field(3600.0, gt=0)
    """A training child still running after this long is killed and the run fails."""
    lease_s: float = Field(30.0, ge=1)
    """How long a claimed run stays held without a heartbeat (renewed every third of it)."""
    max_attempts: int = Field(3, ge=1, le=100)
    """Claims of one run (after workers vanished mid-run) before it is marked failed."""
    poll_interval_s: float = Field(0.5, gt=0, le=60)


# --- the child process ---------------------------------------------------------------------------


async def run_in_child(
    spec: JobSpec, timeout_s: float
) -> tuple[ChildOutcome, tuple[str, dict[str, Any]] | None]:
    """Run ``run_job(spec)`` in a fresh interpreter (``mlcp.trainer.child``); kill it after
    ``timeout_s``. Returns how it ended and its ``(status, body)`` if it wrote one."""
    with tempfile.TemporaryDirectory(prefix="mlcp-train-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.pickle", Path(tmp) / "result.json"
        spec_path.write_bytes(pickle.dumps((spec, list(sys.path))))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mlcp.trainer.child",
            str(spec_path),
            str(result_path),
            str(os.getpid()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        timed_out = False
        try:
            assert proc.stderr is not None
            # Keep only the tail of stderr: enough to explain a crash, bounded in memory.
            tail = bytearray()

            async def drain() -> None:
                assert proc.stderr is not None
                while chunk := await proc.stderr.read(65536):
                    tail.extend(chunk)
                    del tail[:-8192]

            await asyncio.wait_for(asyncio.gather(drain(), proc.wait()), timeout_s)
        except TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        payload: tuple[str, dict[str, Any]] | None = None
        if not timed_out and result_path.is_file():
            status, body = json.loads(result_path.read_text())
            payload = (str(status), dict(body))
        stderr = tail.decode(errors="replace").strip()
    outcome = ChildOutcome(proc.returncode, timed_out, payload is not None, stderr)
    return outcome, payload


# --- the worker ----------------------------------------------------------------------------------


class Worker:
    """Claims and executes runs for one trainer instance.

    The two transactions of a run are ``begin`` (at the claim: give up, or emit RunStarted and
    build the job) and ``record`` (the outcome ``runs.conclude`` decided, fenced by the
    attempt); both take a ``Tx`` and use only the given stores, like the event handlers.
    """

    def __init__(
        self,
        runtime: ServiceRuntime,
        config: PlatformConfig,
        settings: WorkerSettings,
        artifact_limits: ArtifactLimits | None = None,
        stores: Stores | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.settings = settings
        self.artifact_limits = artifact_limits or ArtifactLimits()
        self.stores = stores or Stores()
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def _tx(self, conn: Any, cause: CloudEvent[Any]) -> Tx:
        return Tx(conn, service=self.runtime.name, settings=self.runtime.settings, cause=cause)

    async def run(self) -> None:
        """Claim and execute runs until cancelled."""
        while True:
            try:
                worked = await self.step()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("worker: database unavailable (%s); retrying", exc)
                worked = False
            except Exception:
                log.exception("worker: unexpected error; carrying on")
                worked = False
            if not worked:
                await asyncio.sleep(self.settings.poll_interval_s)

    async def step(self) -> bool:
        """Claim one run and execute it; False when nothing was waiting."""
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            run = await self.stores.runs.claim_run(
                conn, worker=self.id, lease_s=self.settings.lease_s
            )
            if run is None:
                return False
            cause = decode_event(run.request_event)
            log.info("worker %s claimed %s (attempt %d)", self.id, run.run_id, run.attempt)
            spec = await self.begin(self._tx(conn, cause), run)
        if spec is None:
            return True
        # The run's span: a child of the request's trace, covering the training itself.
        with resume_trace(run.traceparent, "mlcp.trainer.run", run_id=run.run_id, model=run.model):
            await self._execute(run, cause, spec)
        return True

    async def begin(self, tx: Tx, run: ClaimedRun) -> JobSpec | None:
        """In the claim's transaction: the job to train, or None when the run failed already
        (its workers vanished too often, or its model left the config)."""
        if runs.claim_action(run.attempt, self.settings.max_attempts) == "give_up":
            await self._fail(tx, run, runs.given_up(run, self.settings.max_attempts))
            return None
        if run.attempt == 1:
            with resume_trace(run.traceparent, "mlcp.trainer.start", run_id=run.run_id):
                await tx.emit(RunStarted(run_id=run.run_id, model=run.model, reason=run.reason))
        try:
            return await self._spec(tx.conn, run)
        except KeyError as exc:
            error = str(exc.args[0]) if exc.args else str(exc)
            await self._fail(tx, run, runs.run_failed(run, "config", error, "UnknownModel"))
            return None

    async def record(
        self, tx: Tx, run: ClaimedRun, conclusion: Finished | Failed, elapsed: float
    ) -> None:
        """In the outcome's transaction: record it and emit its event, unless another worker
        took the run over (the attempt fences this one off: its result is dropped)."""
        if isinstance(conclusion, Failed):
            await self._fail(tx, run, conclusion.event, elapsed)
            return
        if conclusion.baseline_error:
            # A champion refused by the restricted loader is a security signal, not noise.
            log.warning(
                "run %s: the production version of %s was not scored: %s",
                run.run_id,
                run.model,
                conclusion.baseline_error,
            )
        if await self.stores.runs.finish_run(tx.conn, run.run_id, run.attempt, conclusion.result):
            await tx.emit(conclusion.event)
        else:
            log.warning("run %s was taken over; its result is dropped", run.run_id)

    async def _fail(
        self, tx: Tx, run: ClaimedRun, failed: RunFailed, elapsed: float | None = None
    ) -> None:
        if await self.stores.runs.fail_run(
            tx.conn,
            run.run_id,
            run.attempt,
            stage=failed.stage,
            error=failed.error,
            error_type=failed.error_type,
            duration_s=elapsed,
        ):
            await tx.emit(failed)

    async def _spec(self, conn: Any, run: ClaimedRun) -> JobSpec:
        cfg = self.config.model(run.model)
        batches = await self.stores.ledger.batches_upto(conn, run.dataset, run.ledger_seq)
        champion = await self.stores.production.production_artifact(conn, run.model)
        return JobSpec(
            run_id=run.run_id,
            model=run.model,
            entrypoint=cfg.train,
            params=dict(cfg.params),
            label=cfg.label,
            features=None if cfg.features == "auto" else list(cfg.features),
            batches=tuple(
                BatchSpec(
                    run.dataset,
                    b.batch_id,
                    b.uri,
                    b.sha256,
                    b.rows,
                    b.completeness,
                    b.format,
                    b.duplicates,
                )
                for b in batches
            ),
            target=cfg.target,
            artifact_root=str(self.runtime.settings.artifact_root.expanduser()),
            baseline=None
            if champion is None
            else ArtifactSpec(champion.version, champion.uri, champion.sha256, champion.format),
            artifact_policy=cfg.artifact.policy(),
            artifact_limits=self.artifact_limits,
        )

    async def _heartbeat(self, run: ClaimedRun, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                async with self.runtime.pool.acquire() as conn:
                    held = await self.stores.runs.extend_lease(
                        conn, run.run_id, run.attempt, self.settings.lease_s
                    )
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("lease renewal of %s failed (%s)", run.run_id, exc)
                continue
            if not held:
                lost.set()
                return

    async def _release(self, run: ClaimedRun) -> None:
        async with self.runtime.pool.acquire() as conn:
            await self.stores.runs.release_run(conn, run.run_id, run.attempt)

    async def _execute(self, run: ClaimedRun, cause: CloudEvent[Any], spec: JobSpec) -> None:
        lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(run, lost))
        started = time.perf_counter()
        try:
            outcome, payload = await run_in_child(spec, self.settings.train_timeout_s)
        except asyncio.CancelledError:
            # Stopping (SIGTERM): the child is killed; hand the run back for the next worker.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(run))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        elapsed = time.perf_counter() - started
        if lost.is_set():
            log.warning("worker %s lost its lease on %s; result dropped", self.id, run.run_id)
            return
        conclusion = runs.conclude(run, outcome, payload, self.settings.train_timeout_s)
        async with self.runtime.pool.acquire() as conn, conn.transaction():
            await self.record(self._tx(conn, cause), run, conclusion, elapsed)
