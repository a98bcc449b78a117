"""A lane's ledger writes, batched: its next recipients claimed in one transaction, with the sent marks it kept back.

Each delivery used to cost three fsync'd transactions: the claim, the storing intent (where the file goes, written
before the upload so a run taking over after a crash finds it), and the sent mark. A lane
(tasks/delivery/prefect_tasks.py) now claims every recipient it holds at once, and a sent mark may wait for the lane's
next write, which it joins: about one transaction and a half per delivery instead of three (docs/benchmarks.md,
"Ledger batching").

Why a sent mark may wait without weakening exactly-once: only a mark whose row already carries this claim's storing
intent is kept back (``Attempt.storing`` said so: a channel whose store can be asked, S3 or the local bucket). Should
the process die before the mark is written, the row is still pending under a lease that lapses, and the run that takes
it over finds the file where the intent says (``mark_found``) and records it, without storing it again. Every other
mark (email, SFTP: their sends cannot be checked afterwards) is written at once, as before.

A lane also writes the storing intents of every file of a chunk in one transaction, once the chunk is rendered and
before the first of them is stored (``announce``, tasks/delivery/intents.py): one fsync'd commit for the chunk instead
of one per file. Each file still goes only after its own intent is durable on its row.

Neither claims nor kept marks need SQLite's fsync at commit (``durable=False``): losing them to a power loss costs
nothing, and the next storing intent, committed with its fsync before its upload, makes them durable anyway
(docs/delivery.md, "Power loss").

How long a mark waits: until the lane's next claim, or ``MAX_KEPT`` marks, or ``MAX_KEPT_SECONDS`` (checked as each
mark is kept), and always before the lane blocks waiting for work and when it ends. Meanwhile the lease keeper renews
the claim (``LeaseKeeper.hold``), so a kept mark's claim cannot lapse under a live lane.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from bulletin.clock import Clock
from bulletin.errors import BulletinError, ClaimLostError
from bulletin.store import ClaimRequest, ClaimResult, SentMark, Store, write_batch
from tasks.delivery.leases import LeaseKeeper

logger = logging.getLogger(__name__)

#: Sent marks a lane keeps back at most: a crash leaves at most this many rows for a takeover to find.
MAX_KEPT = 8
#: Seconds the oldest kept mark may wait before the next kept one writes them all.
MAX_KEPT_SECONDS = 1.0


class LaneLedger:
    """One lane's batched ledger writes (not thread-safe: one lane, one thread). ``flush`` on exit."""

    def __init__(
        self,
        store: Store,
        keeper: LeaseKeeper,
        *,
        lease_seconds: float,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keeper = keeper
        self._lease = lease_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._kept: list[SentMark] = []
        self._oldest = 0.0

    def __enter__(self) -> LaneLedger:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.flush()

    @property
    def kept(self) -> int:
        return len(self._kept)

    def keep(self, mark: SentMark) -> None:
        """Write ``mark`` with the lane's next batch; now, with the others, if there are enough or they are old."""
        if not self._kept:
            self._oldest = self._monotonic()
        self._kept.append(mark)
        self._keeper.hold([mark.claim])
        if len(self._kept) >= MAX_KEPT or self._monotonic() - self._oldest >= MAX_KEPT_SECONDS:
            self.flush()

    def claim(self, requests: Sequence[ClaimRequest]) -> list[ClaimResult]:
        """Claim ``requests`` in one transaction with the kept marks, committed without fsync (neither needs it: see
        above); the claims granted are renewed from now on (``LeaseKeeper.hold``: the caller releases each once its
        delivery has recorded it). A database error is raised with nothing claimed, the marks still kept."""
        batch = write_batch(
            self._store, sent=self._kept, claims=requests, lease_seconds=self._lease, now=self._clock(), durable=False
        )
        self._written(self._kept, batch.marked)
        self._keeper.hold(batch.claims)
        return batch.claims

    def announce(self, intents: Sequence[SentMark]) -> list[bool]:
        """Write the storing intents of a chunk's files (``storing_intent``) in one transaction, with the kept marks;
        whether each was written (False: its claim was taken over). Committed with its fsync, as a single intent is:
        a file is stored only once its intent is durable. A database error is raised with nothing written, the
        marks still kept."""
        batch = write_batch(self._store, sent=self._kept, intents=intents, lease_seconds=self._lease, now=self._clock())
        self._written(self._kept, batch.marked)
        return batch.noted

    def flush(self) -> None:
        """Write the kept marks now. A database error is logged and they stay kept for the next write; the lane's
        last flush failing leaves them pending with their storing intent, for the run that takes them over."""
        if not self._kept:
            return
        try:
            batch = write_batch(
                self._store, sent=self._kept, lease_seconds=self._lease, now=self._clock(), durable=False
            )
        except BulletinError as exc:
            logger.warning("could not record %d sent file(s) yet: %s", len(self._kept), exc)
            return
        self._written(self._kept, batch.marked)

    def _written(self, marks: list[SentMark], results: Sequence[object]) -> None:
        for result in results:
            if isinstance(result, ClaimLostError):
                # Only after a whole lease without a renewal: the run that took the row over finds the stored file.
                logger.warning("%s; the run holding it now records the file it finds stored", result)
        self._keeper.release([m.claim for m in marks])
        self._kept = []
