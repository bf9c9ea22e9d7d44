"""In-process cache of the registry's hot reads (alias resolution, token checks).

An inference service polls its alias many times a second; answering from memory instead of
PostgreSQL is what makes that cheap. The cache must never serve a value older than a write the
reader could know about, so it follows four rules:

* every write that changes a cached read calls :meth:`ReadCache.invalidate` inside its
  transaction with the *scope* it touches (``m:<model>``, ``t:<token id>``): that marks the
  scope as being written in this process and queues a NOTIFY, which PostgreSQL delivers to
  every registry process (this one included) when — and only if — the transaction commits;
* while a scope is being written here, reads of it bypass the cache and do not fill it, so a
  read after the commit but before the NOTIFY arrived goes to the database (read-your-writes
  for the API and the event handlers of this process, whatever the NOTIFY's delay);
* a NOTIFY drops the scope's entries and ends the local write; a fill is kept only if no
  NOTIFY arrived while its query ran (a generation counter), so a read that raced a write in
  another process cannot store the value from before it;
* the cache is used only while the LISTEN connection is up; when it drops, everything is
  forgotten and reads go to the database until it is back. Entries also expire after
  ``ttl_s`` (a bound on staleness should a connection die unnoticed, or for a change made with
  plain SQL behind the registry's back).

An entry filled by :meth:`ReadCache.fill` and read in the last ``keep_s`` seconds is loaded again
in the background shortly before it expires, under the same rules as a fill (ticket, in-flight
writes). So a poller that pauses or polls less often than every ``ttl_s`` still finds it in
memory, and callers polling in step do not all fall through to the database at each expiry
(eight at once took 30-60 ms on two cores, measured: the alias p99 at concurrency 8), while
the staleness bound stays ``ttl_s``.

Another registry process sees a write as soon as its NOTIFY arrives (a millisecond or so after
the commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from mlcp.runtime.backoff import Backoff

log = logging.getLogger(__name__)

_MAX_ENTRIES = 100_000
# How long a local write keeps its scope out of the cache when its NOTIFY never comes (the
# transaction rolled back): the cache is merely bypassed meanwhile, never wrong.
_WRITE_DEADLINE_S = 60.0
# Reload an entry when it would expire before the round after next begins: a round is due every
# ``ping_s``, this is the slack for a late one.
_RELOAD_SLACK_S = 1.0

Load = Callable[[], Awaitable[Any | None]]
"""Reads a cached value from the database again (None: it is gone)."""


@dataclass(slots=True)
class _Entry:
    expires: float
    value: Any
    load: Load | None  # how to read it again (a fill), None for a plain put
    read: float  # when it was last read


def channel(schema: str) -> str:
    """The NOTIFY channel of ``schema``'s registry (an identifier: at most 63 bytes)."""
    return f"mlcp_registry_{schema}"[:63]


def model_scope(model: str) -> str:
    return f"m:{model}"


def token_scope(token_id: str) -> str:
    return f"t:{token_id}"


class ReadCache:
    """Values by (scope, key), dropped by the registry's own change notifications."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        *,
        ttl_s: float = 5.0,
        ping_s: float = 2.0,
        keep_s: float = 60.0,
    ) -> None:
        self._dsn = database_url
        self._channel = channel(schema)
        self._ttl_s = ttl_s
        self._ping_s = ping_s
        self._keep_s = keep_s
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._scope_keys: dict[str, set[str]] = {}
        self._writing: dict[str, dict[str, float]] = {}  # scope → local write id → deadline
        self._generation = 0
        self._live = False
        self._stop = asyncio.Event()
        self._nonce = secrets.token_hex(4)
        self._ids = itertools.count()

    @property
    def live(self) -> bool:
        """Whether the cache is in use (the LISTEN connection is up)."""
        return self._live

    # --- reads ---------------------------------------------------------------------------------

    def get(self, scope: str, key: str = "") -> Any | None:
        """The cached value, or None (absent, expired, being written, or the cache is off)."""
        if not self._live or self._busy(scope):
            return None
        entry = self._entries.get((scope, key))
        if entry is None:
            return None
        now = time.monotonic()
        if now >= entry.expires:
            self._entries.pop((scope, key), None)
            return None
        entry.read = now
        return entry.value

    def ticket(self) -> int:
        """Taken before the database read whose result may be :meth:`put`."""
        return self._generation

    def put(self, scope: str, key: str, value: Any, ticket: int) -> None:
        """Remember ``value`` unless something was invalidated since ``ticket`` was taken."""
        self._store(scope, key, value, ticket, None, time.monotonic())

    async def fill(self, scope: str, key: str, load: Load) -> Any | None:
        """``load()`` and remember what it found, as :meth:`put` would; while the entry is read
        it is loaded again before it expires (see the module doc)."""
        ticket = self._generation
        value = await load()
        if value is not None:
            self._store(scope, key, value, ticket, load, time.monotonic())
        return value

    def _store(
        self, scope: str, key: str, value: Any, ticket: int, load: Load | None, read: float
    ) -> None:
        if not self._live or ticket != self._generation or self._busy(scope):
            return
        if len(self._entries) >= _MAX_ENTRIES:
            self._drop_all()
        self._entries[(scope, key)] = _Entry(time.monotonic() + self._ttl_s, value, load, read)
        self._scope_keys.setdefault(scope, set()).add(key)

    async def _reload_due(self) -> None:
        """Load again the entries read in the last ``keep_s`` that would expire before the next
        round (the LISTEN loop runs one every ``ping_s``)."""
        now = time.monotonic()
        soon = now + self._ping_s + _RELOAD_SLACK_S
        due = [
            (where, entry)
            for where, entry in self._entries.items()
            if entry.load is not None and entry.expires < soon and now - entry.read < self._keep_s
        ]
        for (scope, key), entry in due:
            assert entry.load is not None
            ticket = self._generation
            try:
                value = await asyncio.wait_for(entry.load(), self._ping_s)
            except Exception as exc:  # it expires as it would have; the next read tries again
                log.debug("reloading %s %s failed: %s", scope, key, exc)
                continue
            if value is not None:
                read = (self._entries.get((scope, key)) or entry).read  # reads went on meanwhile
                self._store(scope, key, value, ticket, entry.load, read)

    # --- writes --------------------------------------------------------------------------------

    async def invalidate(self, conn: Any, *scopes: str) -> None:
        """Inside a write transaction: the scopes it changes (see the module doc)."""
        write_id = f"{self._nonce}.{next(self._ids)}"
        deadline = time.monotonic() + _WRITE_DEADLINE_S
        for scope in scopes:
            self._writing.setdefault(scope, {})[write_id] = deadline
        await conn.execute("SELECT pg_notify($1, $2)", self._channel, " ".join((write_id, *scopes)))

    def _busy(self, scope: str) -> bool:
        writes = self._writing.get(scope)
        if not writes:
            return False
        now = time.monotonic()
        for write_id, deadline in list(writes.items()):
            if deadline <= now:
                del writes[write_id]
        if not writes:
            del self._writing[scope]
            return False
        return True

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        write_id, *scopes = str(payload).split(" ")
        self._generation += 1
        for scope in scopes:
            for key in self._scope_keys.pop(scope, ()):
                self._entries.pop((scope, key), None)
            writes = self._writing.get(scope)
            if writes is not None:
                writes.pop(write_id, None)
                if not writes:
                    del self._writing[scope]

    def _drop_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._scope_keys.clear()

    # --- the LISTEN connection -----------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Keep a LISTEN connection (a background task of the runtime) until :meth:`stop`."""
        backoff = Backoff(0.2, 5.0)
        while not self._stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=10, server_settings={"application_name": self._channel}
                )
                conn.add_termination_listener(self._lost)
                await conn.add_listener(self._channel, self._on_notify)
                self._drop_all()
                self._live = True
                backoff.reset()
                while not self._stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self._ping_s)
                    # A connection that died without a FIN is noticed here.
                    await conn.fetchval("SELECT 1", timeout=self._ping_s)
                    await self._reload_due()
            except Exception as exc:
                log.warning("registry cache off (%s: %s); retrying", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff.next())
            finally:
                self._lost()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)

    def _lost(self, *_: object) -> None:
        self._live = False
        self._drop_all()
