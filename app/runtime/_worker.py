"""The worker: claims deliveries, runs handlers with leases and timeouts, commits in groups."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import os
import random
import socket
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _json, _store, _stream_store
from ._config import CronStepConfig, EventStepConfig, RetryPolicy
from ._context import Event
from ._db import database_outage, driver_transaction, one_statement, write_transaction
from ._logging import get_logger
from ._process import pid_alive
from ._recorder import StepRun
from ._store import Claimed, Failure, NewEvent, StateOp
from ._stream_store import Change, StreamOp
from ._unit import Unit

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._steps import Step


@dataclass(slots=True)
class _Done:
    """A finished handler waiting for the group commit."""

    claimed: Claimed
    unit: Unit | None  # None for a failure
    failure: Failure | None
    result: asyncio.Future[bool]


class Handoff:
    """New deliveries an emit of this process leases to its own worker, in the emit's transaction.

    Offered only while the worker's claim loop sits idle (it found nothing due, so nothing older
    is overtaken), up to the worker's free capacity plus its prefetch (those wait in order for a
    free slot), and taking only what a claim would take at once: a delivery due now, of a step
    without a concurrency limit, in no message group. Once the emit commits the handlers start
    at once: no wake-up, no claim, no second transaction.
    Durability is unchanged: the delivery is in the database, leased like a claimed one, and a
    crash before it is done leaves it to be claimed again when the lease expires (at once when
    the process restarts).
    """

    __slots__ = (
        "_prefix",
        "_reserved",
        "_room",
        "_worker",
        "claims",
        "expires_at",
        "offered",
        "owner",
    )

    def __init__(self, worker: Worker, room: int, now: float) -> None:
        self._worker = worker
        self._room = room
        self._reserved = 0
        self.owner = worker.owner
        self.expires_at = now + worker.settings.lease_seconds
        self._prefix = f"{worker.owner}:{next(worker._claims)}:h"
        self.offered = 0
        self.claims: list[Claimed] = []

    def take(self, step: str, delay: float, message_group_id: str | None) -> str | None:
        self.offered += 1
        if (
            self._reserved >= self._room
            or delay > 0
            or message_group_id is not None
            or step not in self._worker._free_set
        ):
            return None
        self._reserved += 1
        self._worker._busy += 1  # counted now: a claim meanwhile must not fill the same room
        return f"{self._prefix}{self.offered}"

    def taken(self, claims: list[Claimed]) -> None:
        self.claims = claims

    def settle(self, committed: bool) -> None:
        """After the emit's transaction: run what was taken (committed) or give its room back.
        The worker is woken when a committed emit left deliveries for a claim."""
        worker, claims = self._worker, self.claims if committed else []
        unused, self._reserved, self.claims = self._reserved - len(claims), 0, []
        if unused:
            worker._busy -= unused
            worker._capacity.set()
        if not committed:
            return
        worker._adopt(claims)
        if self.offered == 0 or len(claims) < self.offered:
            worker.wake()


# While claiming, leases that expired (their worker died) are looked for this often.
RESCUE_EVERY_SECONDS = 1.0

# Runs of one delivery cut short by their worker's death (SIGKILL, out of memory, a power cut)
# before it is dead-lettered as a poison message. Such a run had no outcome, so it does not use
# up an attempt: a crash during the last attempt runs that attempt again.
MAX_INTERRUPTIONS = 3


# Postgres: once a worker's claims have changed this many rows, it vacuums the queue table (at
# most every VACUUM_MIN_SECONDS) rather than leave it to autovacuum, which looks once a minute at
# most and only after a fifth of the table changed: at 1,500 events/s that is 90,000 dead row
# versions for every claim to walk past, and an emit -> handler latency that doubles.
VACUUM_AFTER_CHANGES = 5_000
VACUUM_MIN_SECONDS = 2.0


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs the deliveries of event and cron steps, up to `concurrency` at a time."""

    def __init__(self, runtime: Runtime, *, concurrency: int) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.concurrency = max(1, concurrency)
        self.owner = worker_identity()
        self._claims = itertools.count(1)
        self._log = get_logger(component="worker", owner=self.owner)
        self._wake = asyncio.Event()
        self._capacity = asyncio.Event()
        # Leased by us until committed (renewed, given back at shutdown)...
        self._held: dict[str, Claimed] = {}
        # ...of which this many are ours to run (running, taken by an emit being committed, or
        # prefetched): a claim only fills what this leaves of the concurrency limit.
        self._busy = 0
        # Handed over by an emit beyond the concurrency limit, leased to us, in order: each
        # starts as a handler finishes. An emit of this process may hand over up to
        # `concurrency + prefetch` deliveries, so that a burst's overflow needs no claim (no
        # second transaction, no disk sync) before it runs; a crash leaves them leased, to be
        # run again like any claimed delivery.
        self.prefetch = self.concurrency
        self._prefetched: collections.deque[Claimed] = collections.deque()
        self._running = 0  # handlers started and not finished: at most `concurrency`
        self._poll = runtime.poll_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: asyncio.Queue[_Done] = asyncio.Queue()
        self._stopping = False
        # Deliveries whose attempt the database cut short (down, or full) and whose lease could
        # not be given back yet: given back as soon as the database answers again.
        self._returning: set[str] = set()
        # Token prefixes of claims whose answer was lost: whatever they leased is given back.
        self._unsure_claims: set[str] = set()
        self._returns_waiting = asyncio.Event()
        self._outage_streak = 0
        self._loops: list[asyncio.Task[None]] = []
        steps = runtime.registry.queued_steps
        self._free_steps = [
            s.name
            for s in steps
            if not (isinstance(s.config, EventStepConfig) and s.config.concurrency)
        ]
        self._limited_steps = [
            (s.name, s.config.concurrency)
            for s in steps
            if isinstance(s.config, EventStepConfig) and s.config.concurrency
        ]
        self._all_steps = [s.name for s in steps]
        self._free_set = frozenset(self._free_steps)
        # True while the claim loop is idle (its last claim found nothing due), so that an emit
        # of this process may hand its deliveries straight over (`handoff`) overtaking none.
        self._waiting = False
        # ...and, meanwhile, whether a due delivery waits on another one (its message group's
        # head, its step's concurrency limit): each delivery that finishes wakes the loop.
        self._blocked = False
        self._blocked_wait = 0.01  # doubles while nothing of what is due can be claimed
        # Postgres: the timers an empty claim answered with (`_store.claim_or_due`), for the
        # idle wait that follows it; None: _idle asks the database.
        self._due: _store.Due | None = None
        # Expired leases are queued again before a claim: when one is seen, and every second.
        self._rescue_wanted = False
        self._rescue_at = 0.0
        # Rows our claims changed since the queue table was last vacuumed (Postgres).
        self._churn = 0
        self._vacuumed_at = 0.0
        self._vacuum: asyncio.Task[None] | None = None
        self.processed = 0
        self.handed_over = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._expire_dead_local_owners()
        self.runtime.clock.on_advance(self.wake)
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="stepwise-claim"),
            asyncio.create_task(self._commit_loop(), name="stepwise-commit"),
            asyncio.create_task(self._renew_loop(), name="stepwise-leases"),
            asyncio.create_task(self._housekeeping_loop(), name="stepwise-housekeeping"),
            asyncio.create_task(self._give_back_loop(), name="stepwise-give-back"),
        ]
        self._log.info("worker started", concurrency=self.concurrency, steps=len(self._all_steps))

    def wake(self) -> None:
        self._wake.set()

    def handoff(self) -> Handoff | None:
        """An offer to take an emit's new deliveries in its transaction, or None (busy)."""
        room = self.concurrency + self.prefetch - self._busy
        if not self._waiting or self._stopping or room <= 0:
            return None
        return Handoff(self, room, self.runtime.clock.now())

    def _adopt(self, claims: list[Claimed]) -> None:
        """Run deliveries handed over by an emit that committed (already leased to us); those
        beyond the concurrency limit wait here, in order, for a handler to finish."""
        self.handed_over += len(claims)
        for item in claims:
            self._held[item.lease_token] = item
            if self._stopping:  # given back with the rest at the end of `stop`
                self._busy -= 1
            elif self._running < self.concurrency:
                self._start(item)
            else:
                self._prefetched.append(item)

    def _start(self, item: Claimed) -> None:
        self._running += 1  # counted now: the task may not have started when the next comes
        self._tasks[item.lease_token] = asyncio.create_task(self._run(item))

    def _start_prefetched(self) -> None:
        """A handler finished: the next delivery waiting here takes its place."""
        if self._prefetched and not self._stopping:
            self._start(self._prefetched.popleft())

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running handlers finish within `grace` seconds; give back the rest."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._wake.set()
        claim_loop = self._loops[0] if self._loops else None
        if claim_loop is not None:
            claim_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await claim_loop
        running = list(self._tasks.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        # Everything finished has been queued; let the committer drain it.
        await self._done.join()
        for task in [*self._loops[1:], *([self._vacuum] if self._vacuum else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        leftover = list(self._held) + list(self._returning)
        if leftover or self._unsure_claims:
            with contextlib.suppress(Exception):
                async with self.runtime.engine.begin() as conn:
                    released = await _store.release_leases(
                        conn, leftover, prefixes=list(self._unsure_claims)
                    )
                self._log.info("gave back unfinished deliveries", count=released)
        self._log.info("worker stopped", processed=self.processed)

    async def _expire_dead_local_owners(self) -> None:
        """A worker on this host that died (SIGKILL) left leases: free them now, not in 15 s."""
        host = socket.gethostname()
        async with self.runtime.engine.begin() as conn:
            dead = []
            for owner in await _store.lease_owners(conn):
                parts = owner.split(":")
                if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                    continue
                if not pid_alive(int(parts[1])):
                    dead.append(owner)
            if dead:
                now = self.runtime.clock.now()
                count = await _store.rescue_expired(conn, now, owners=dead)
                self._log.info("recovered deliveries of dead workers", count=count, owners=dead)

    async def _rescue(self, now: float) -> None:
        """Queue again what workers that stopped mid-run (their leases expired) left running."""
        self._rescue_wanted = False
        self._rescue_at = now + RESCUE_EVERY_SECONDS
        if self.runtime.is_sqlite:
            async with self.runtime.engine.begin() as conn:
                count = await _store.rescue_expired(conn, now)
        else:  # one statement: in autocommit, one round trip on the claim's path
            async with one_statement(self.runtime.engine) as conn:
                count = await _store.rescue_expired(conn, now)
        if count:
            self._log.warning("queued again deliveries whose worker stopped mid-run", count=count)

    # -- claiming -------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                free = self.concurrency - self._busy
                if free <= 0:
                    self._capacity.clear()
                    await self._capacity.wait()
                    continue
                self._wake.clear()
                claimed = await self._claim(min(free, self.settings.claim_batch))
                backoff = 0.5
                for item in claimed:
                    self._held[item.lease_token] = item
                    self._busy += 1
                    self._start(item)
                if claimed:
                    self._vacuum_when_due(len(claimed))
                    # Busy: look again soon even without a wake-up (SQLite across processes).
                    self._poll = self._blocked_wait = 0.01
                    # Let the handlers just created start before the next claim is prepared.
                    await asyncio.sleep(0)
                    continue
                await self._idle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down or restarting: retry, do not die
                self._log.warning("claiming failed; retrying", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _vacuum_when_due(self, claimed: int) -> None:
        """Postgres: vacuum the queue table in the background once enough rows changed."""
        if self.runtime.is_sqlite:
            return
        self._churn += claimed
        now = time.monotonic()
        if (
            self._churn < VACUUM_AFTER_CHANGES
            or now - self._vacuumed_at < VACUUM_MIN_SECONDS
            or (self._vacuum is not None and not self._vacuum.done())
        ):
            return
        self._churn, self._vacuumed_at = 0, now
        self._vacuum = asyncio.create_task(self._vacuum_queue(), name="stepwise-vacuum")

    async def _vacuum_queue(self) -> None:
        try:
            async with one_statement(self.runtime.engine) as conn:
                await _store.vacuum_queue(conn)
        except Exception as exc:  # the next one will try again; autovacuum still runs
            self._log.warning("could not vacuum the queue table", error=str(exc))

    async def _claim(self, limit: int) -> list[Claimed]:
        now = self.runtime.clock.now()
        if self._rescue_wanted or now >= self._rescue_at:
            await self._rescue(now)
        self._due = None
        prefix = f"{self.owner}:{next(self._claims)}:"
        claim = functools.partial(
            _store.claim_params,
            now=now,
            owner=self.owner,
            token_prefix=prefix,
            lease_seconds=self.settings.lease_seconds,
        )
        out: list[Claimed] = []
        if self._free_steps:
            out = await self._claim_free(claim, prefix, limit)
        if not self._limited_steps or len(out) >= limit:
            return out
        # A global concurrency limit needs its lock and its count in the claim's transaction.
        async with self.runtime.engine.begin() as conn:
            for step, cap in self._limited_steps:
                room = min(limit - len(out), cap)
                if room <= 0:
                    break
                await _store.lock_step_claims(conn, step)
                room = min(room, cap - await _store.running_count(conn, step, now))
                if room > 0:
                    out += await _store.claim(conn, claim(steps=[step], limit=room))
        return out

    async def _claim_free(
        self, claim: functools.partial[Any], prefix: str, limit: int
    ) -> list[Claimed]:
        if self.runtime.is_sqlite:
            # On the driver: the write lock is never held across a loop turn by a claim.
            async with driver_transaction(self.runtime.engine) as db:
                return _store.claim_sqlite(db, claim(steps=self._free_steps, limit=limit))
        # Postgres: one statement in autocommit, one round trip instead of three (BEGIN, the
        # claim, COMMIT). If its answer never comes (the connection cut, the task cancelled),
        # the server may have leased deliveries to us that we never heard of: they are given
        # back, by the claim's token prefix, as soon as the database answers again, instead of
        # waiting for their leases to expire.
        try:
            async with one_statement(self.runtime.engine) as conn:
                if self._limited_steps:  # their claims follow: the timers come from _idle
                    return await _store.claim(conn, claim(steps=self._free_steps, limit=limit))
                out, self._due = await _store.claim_or_due(
                    conn, claim(steps=self._free_steps, limit=limit), self._all_steps
                )
                return out
        except BaseException:
            self._unsure_claims.add(prefix)
            self._returns_waiting.set()
            raise

    async def _idle(self) -> None:
        """Sleep until woken (an emit, a NOTIFY, a delivery finishing, the clock) or until the
        next delivery is due or the next lease expires.

        Idle, this costs one query per poll interval; the interval shrinks to 10 ms while work
        keeps coming and grows back to the setting when it stops. A delivery that is due but
        was not claimable (its message group's head still runs, or its step is at its
        concurrency limit) is looked at again when a delivery finishes, or after a wait that
        doubles from 10 ms: never in a busy loop. Meanwhile (nothing claimable) an emit of this
        process may hand its deliveries straight over.
        """
        self._waiting = True
        first = True
        try:
            while not self._stopping:
                due, self._due = self._due, None
                if due is None or not first:
                    async with self.runtime.read_connection() as conn:
                        due = await _store.next_due(conn, self._all_steps)
                now = self.runtime.clock.now()
                if due.lease is not None and due.lease <= now:
                    self._rescue_wanted = True
                    return
                # On the first look the claim has just found nothing: what is due is blocked.
                self._blocked = due.pending is not None and due.pending <= now
                if self._blocked and not first:
                    return
                first = False
                self._poll = min(self._poll * 2, self.runtime.poll_seconds)
                timeout = self._poll
                if self._blocked:
                    timeout = self._blocked_wait
                    self._blocked_wait = min(self._blocked_wait * 2, self.runtime.poll_seconds)
                for at in (due.pending, due.lease):
                    if at is not None and at > now:
                        timeout = min(timeout, at - now + 0.001)
                try:
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                    return
                except TimeoutError:
                    earliest = due.earliest
                    if earliest is not None and now < earliest <= self.runtime.clock.now():
                        return
        finally:
            self._waiting = False
            self._blocked = False

    # -- running --------------------------------------------------------------------------------

    async def _run(self, item: Claimed) -> None:
        step = self.runtime.registry.by_name.get(item.step)
        started = self.runtime.clock.now()
        t0 = time.perf_counter()
        unit = Unit(self.runtime.engine, self.runtime.clock.now)
        outcome, error = "ok", None
        retry = _retry_policy(step)
        committed: bool | None = None
        outage = None
        try:
            if step is None or step.handler is None:
                raise _Permanent(f"no step named {item.step!r} is loaded by this worker")
            if item.interruptions >= MAX_INTERRUPTIONS:
                # Each of the last runs ended with its lease expiring (the worker died, hung or
                # lost the database): a delivery that keeps taking its workers down stops here.
                raise _Permanent(
                    f"its worker stopped {item.interruptions} times while running it (the "
                    "leases expired without an outcome): not run again"
                )
            if item.interruptions:
                self._log.warning(
                    "running again an attempt its worker did not finish",
                    step=item.step,
                    delivery_id=item.id,
                    attempt=item.attempt,
                    interruptions=item.interruptions,
                    trace_id=item.trace_id,
                )
            event = self._event_for(step, item)
            ctx = self.runtime.context(step, unit, trace_id=item.trace_id, attempt=item.attempt)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the handler in a task
            # of its own, one more trip through the loop before the handler starts.
            async with asyncio.timeout(retry.timeout):
                await step.handler.invoke(event, ctx)
        except asyncio.CancelledError:
            await unit.rollback()
            self._tasks.pop(item.lease_token, None)
            if self._stopping:
                return  # released at shutdown, the attempt does not count
            raise
        except TimeoutError:
            outcome, error = (
                "timeout",
                f"timed out after {retry.timeout:g}s (attempt {item.attempt})",
            )
        except _Permanent as exc:
            outcome, error = "error", str(exc)
            item.max_attempts = item.attempt  # retrying cannot help: dead-letter now
        except Exception as exc:
            outcome, error = "error", _describe(exc)
            outage = database_outage(exc)
        finally:
            unit.closed = True
            self._busy -= 1
            self._running -= 1
            self._capacity.set()
            self._start_prefetched()
        try:
            if outage is not None:
                # The database failed, not the handler: this attempt does not count.
                await unit.rollback()
                error = f"database {outage} (given back, the attempt does not count): {error}"
                self._give_back(item)
            elif outcome == "ok":
                if unit.conn is not None:  # it holds its own transaction (increment/update)
                    handoff = self.runtime.handoff() if unit.emits else None
                    committed = await unit.commit(ack_token=item.lease_token, handoff=handoff)
                    if committed and unit.emits and handoff is None:
                        self.runtime.notify_local()
                else:
                    committed = await self._submit(item, unit, None)
                if committed:
                    self._outage_streak = 0
                else:
                    outcome, error = "lost", "lease lost before commit; another worker runs it"
            else:
                await unit.rollback()
                dead = item.attempt >= item.max_attempts
                retry_at = None
                if not dead:
                    retry_at = self.runtime.clock.now() + retry.delay_before(
                        item.attempt, random.random()
                    )
                failure = Failure(item.lease_token, item.id, item.attempt, error or "", retry_at)
                log = self._log.bind(
                    step=item.step, delivery_id=item.id, error=error, trace_id=item.trace_id
                )
                if not await self._submit(item, None, failure):
                    outcome = "lost"
                    log.warning(
                        "delivery failed, but its lease was lost: another worker runs it",
                        attempt=item.attempt,
                    )
                elif dead:
                    outcome = "dead"
                    log.error("delivery dead-lettered", attempts=item.attempt)
                else:
                    log.warning(
                        "delivery failed; will retry",
                        attempt=item.attempt,
                        retry_in=round((retry_at or 0) - self.runtime.clock.now(), 3),
                    )
        except Exception as exc:
            outcome, error = "error", f"commit failed: {exc}"
            if database_outage(exc) is not None:
                # Nothing was recorded: run it again once the database is back, without
                # waiting for the lease to expire, and without counting this attempt.
                self._log.warning(
                    "database unavailable: delivery given back", error=str(exc), step=item.step
                )
                self._give_back(item)
            else:
                self._log.error(
                    "could not record the delivery's outcome", error=str(exc), step=item.step
                )
        finally:
            self._held.pop(item.lease_token, None)
            self._tasks.pop(item.lease_token, None)
        if self._blocked:
            self.wake()  # what waited on this delivery (its group, its step's limit) may go
        self.processed += 1
        self.runtime.recorder.record(
            StepRun(
                trace_id=item.trace_id,
                step=item.step,
                kind="cron" if item.topic is None else "event",
                attempt=item.attempt,
                started_at=started,
                duration_ms=(time.perf_counter() - t0) * 1000,
                outcome=outcome,
                error=error,
                detail=item.topic,
                delivery_id=item.id,
            )
        )

    def _event_for(self, step: Step, item: Claimed) -> Event | None:
        if isinstance(step.config, CronStepConfig):
            return None
        data = _json.loads(item.data) if item.data is not None else None
        model = step.config.input if isinstance(step.config, EventStepConfig) else None
        if model is not None:
            try:
                data = model.model_validate(data)
            except Exception as exc:
                raise _Permanent(f"event data does not fit the input model: {exc}") from None
        return Event(item.topic or "", data, item.event_id or "", item.trace_id, item.attempt)

    async def _submit(self, item: Claimed, unit: Unit | None, failure: Failure | None) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._done.put(_Done(item, unit, failure, future))
        return await future

    # -- group commit ---------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._done.get()]
            # One loop turn first: the handlers already started (a burst just handed over) run
            # to their end and join this group, instead of waiting behind its disk sync to
            # start.
            await asyncio.sleep(0)
            while not self._done.empty() and len(batch) < self.settings.commit_batch:
                batch.append(self._done.get_nowait())
            try:
                await self._commit_group(batch)
            except Exception as exc:
                self._log.warning("group commit failed; committing one by one", error=str(exc))
                for done in batch:
                    if not done.result.done():
                        await self._commit_alone(done)
            finally:
                for _ in batch:
                    self._done.task_done()

    async def _commit_group(self, batch: Sequence[_Done]) -> None:
        now = self.runtime.clock.now()
        successes = [d for d in batch if d.unit is not None]
        failures = [d.failure for d in batch if d.failure is not None]
        tokens = [d.claimed.lease_token for d in successes]
        emitting = any(d.unit is not None and d.unit.emits for d in successes)
        handoff = self.runtime.handoff() if emitting else None
        changes: list[Change] = []
        failed_ids: set[int] = set()
        with _store.settling(handoff):
            if self.runtime.is_sqlite and not failures and not _any_stream_ops(successes):
                # The usual group: acks, state writes and emits alone, all on SQLite's driver.
                async with driver_transaction(self.runtime.engine) as db:
                    done_ids = _store.ack_sqlite(db, tokens, now)
                    ops, emits, _ = _effects(successes, done_ids)
                    _store.apply_state_ops_sqlite(db, ops, now)
                    _store.insert_events_sqlite(db, emits, now, handoff)
            elif self._only_state_sets(successes, failures, emitting):
                # Postgres's usual group when handlers only write state: one statement.
                sets = [
                    (d.claimed.id, op)
                    for d in successes
                    for op in d.unit.ops  # type: ignore[union-attr]
                ]
                async with one_statement(self.runtime.engine) as conn:
                    done_ids = await _store.ack_and_set(conn, tokens, sets, now)
                emits = []
            else:
                async with write_transaction(self.runtime.engine) as conn:
                    done_ids = await _store.ack(conn, tokens, now)
                    ops, emits, stream_ops = _effects(successes, done_ids)
                    await _store.apply_state_ops(conn, ops, now)
                    await _store.insert_events(conn, emits, now, notify=True, offer=handoff)
                    failed_ids = await _store.record_failures(conn, failures, now)
                    # Stream writes commit with the deliveries' acks; subscribers hear of them
                    # after.
                    changes = await _stream_store.apply_stream_ops(
                        conn, stream_ops, now, self.runtime.stream_hub.tombstone_seconds
                    )
                    await _stream_store.notify_changes(conn, changes, now)
        if emits and handoff is None:
            self.runtime.notify_local()
        if changes:
            self.runtime.stream_hub.committed(changes)
        for d in batch:
            if not d.result.done():
                ids = failed_ids if d.failure is not None else done_ids
                d.result.set_result(d.claimed.id in ids)

    def _only_state_sets(
        self, successes: Sequence[_Done], failures: Sequence[Failure], emitting: bool
    ) -> bool:
        """Postgres, a group of successes whose only effects are state sets."""
        return (
            not self.runtime.is_sqlite
            and not failures
            and not emitting
            and not _any_stream_ops(successes)
            and all(op.kind == "set" for d in successes for op in d.unit.ops)  # type: ignore[union-attr]
        )

    async def _commit_alone(self, done: _Done) -> None:
        try:
            if done.unit is not None:
                ok = await done.unit.commit(ack_token=done.claimed.lease_token)
                if done.unit.emits:
                    self.runtime.notify_local()
                done.result.set_result(ok)
                return
            async with self.runtime.engine.begin() as conn:
                recorded = await _store.record_failures(
                    conn,
                    [done.failure],  # type: ignore[list-item]
                    self.runtime.clock.now(),
                )
            done.result.set_result(done.claimed.id in recorded)
        except Exception as exc:
            # Not even alone: the handler's task decides (give it back, or let the lease expire).
            done.result.set_exception(exc)

    # -- leases ---------------------------------------------------------------------------------

    def _give_back(self, item: Claimed) -> None:
        self._returning.add(item.lease_token)
        self._returns_waiting.set()

    async def _give_back_loop(self) -> None:
        """Give back the deliveries the database cut short, as soon as it answers; each is due
        again after a pause that grows while the outage lasts (a full disk is not fixed in a
        second), so they are not claimed and cut short again in a tight loop."""
        retry_in = 0.2
        while True:
            await self._returns_waiting.wait()
            tokens, prefixes = list(self._returning), list(self._unsure_claims)
            pause = min(0.5 * 2 ** min(self._outage_streak, 6), 30.0)
            try:
                async with self.runtime.engine.begin() as conn:
                    count = await _store.release_leases(
                        conn,
                        tokens,
                        prefixes=prefixes,
                        available_at=self.runtime.clock.now() + pause,
                    )
            except Exception as exc:
                self._log.warning(
                    "cannot give deliveries back yet", error=str(exc), retry_in=retry_in
                )
                await asyncio.sleep(retry_in)
                retry_in = min(retry_in * 2, 5.0)
                continue
            retry_in = 0.2
            self._outage_streak += 1  # back to 0 when a delivery commits again
            self._returning.difference_update(tokens)
            self._unsure_claims.difference_update(prefixes)
            if not self._returning and not self._unsure_claims:
                self._returns_waiting.clear()
            if count:  # a lost claim may have leased nothing
                self._log.info(
                    "gave back deliveries the database cut short", count=count, due_in=pause
                )

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_renew_seconds)
            tokens = list(self._held)
            if not tokens:
                continue
            try:
                async with self.runtime.engine.begin() as conn:
                    await _store.renew_leases(
                        conn, tokens, self.runtime.clock.now() + self.settings.lease_seconds
                    )
            except Exception as exc:
                self._log.warning("lease renewal failed", error=str(exc))

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.housekeeping_seconds)
            try:
                removed = await self.runtime.purge_history()
                if any(removed.values()):
                    self._log.info("old history removed", **removed)
            except Exception as exc:
                self._log.warning("housekeeping failed", error=str(exc))


class _Permanent(Exception):
    """A failure that retrying cannot fix."""


def _any_stream_ops(successes: Sequence[_Done]) -> bool:
    return any(d.unit.stream_ops for d in successes)  # type: ignore[union-attr]


def _effects(
    successes: Sequence[_Done], done_ids: set[int]
) -> tuple[list[StateOp], list[NewEvent], list[StreamOp]]:
    """The state writes, emits and stream writes of the deliveries whose ack went through."""
    kept = [d.unit for d in successes if d.claimed.id in done_ids]
    return (
        [op for unit in kept for op in unit.ops],  # type: ignore[union-attr]
        [e for unit in kept for e in unit.emits],  # type: ignore[union-attr]
        [op for unit in kept for op in unit.stream_ops],  # type: ignore[union-attr]
    )


def _retry_policy(step: Step | None) -> RetryPolicy:
    if step is not None and isinstance(step.config, EventStepConfig | CronStepConfig):
        return step.config.retry
    return RetryPolicy()


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


__all__ = ["Worker", "worker_identity"]
