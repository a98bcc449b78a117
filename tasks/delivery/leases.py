"""Keep the ledger claims of deliveries in flight alive, so that the lease can be short.

A claim's lease (``BULLETIN_CLAIM_LEASE_SECONDS``) is how long a crashed claimer's rows stay blocked: short, so a
re-run after a SIGKILL sends them within a minute or two rather than after 15. A live delivery may take longer than
that (a slow query, a large upload, an SMTP server that stalls), so a ``LeaseKeeper`` renews the claims its batch or
lane holds (``holding``) on a daemon thread, every third of the lease: two renewals in a row may fail (the database
restarting, say) before the lease runs out.

A renewal that finds the row taken over (``bulletin.store.renew`` is False) means another run claimed it after the
lease lapsed (this process was paused, or the ledger unreachable, for a whole lease): that run sends it now. The
claim is then reported ``lost`` and the delivery pipeline sends nothing more for it; the ledger's own guard refuses to
record its outcome over the other claim's (``ClaimLostError``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType

from bulletin.clock import Clock
from bulletin.errors import BulletinError
from bulletin.store import ClaimResult, Store, renew

logger = logging.getLogger(__name__)

#: Renewals per lease: the keeper renews every ``lease / RENEWALS_PER_LEASE`` seconds.
RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    """Renews the leases of the claims registered with ``holding`` until ``stop``; one per batch or lane.

    The thread starts with the first ``holding`` (a batch whose recipients were all sent earlier starts none).
    """

    def __init__(self, store: Store, *, lease_seconds: float, clock: Clock) -> None:
        self._store = store
        self._lease = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, ClaimResult] = {}
        self._holds: dict[int, int] = {}
        self._lost: set[int] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @contextmanager
    def holding(self, claims: Iterable[ClaimResult]) -> Iterator[None]:
        """Renew ``claims`` while the block runs: from their claim until the delivery has recorded their outcome."""
        mine = self.hold(claims)
        try:
            yield
        finally:
            self.release(mine)

    def hold(self, claims: Iterable[ClaimResult]) -> list[ClaimResult]:
        """Start renewing ``claims`` (those granted) until ``release``: a lane's claims made ahead of their delivery,
        or whose sent mark it keeps back (tasks/delivery/marks.py). Counted: a claim held twice is renewed until
        released twice. Returns the ones held."""
        mine = {id(c): c for c in claims if c.claimed}
        with self._lock:
            self._held.update(mine)
            for key in mine:
                self._holds[key] = self._holds.get(key, 0) + 1
            if mine and self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="bulletin-lease-keeper", daemon=True)
                self._thread.start()
        return list(mine.values())

    def release(self, claims: Iterable[ClaimResult]) -> None:
        """Stop renewing ``claims``: their outcome is recorded."""
        with self._lock:
            for held_claim in claims:
                key = id(held_claim)
                self._holds[key] = self._holds.get(key, 1) - 1
                if self._holds[key] <= 0:
                    self._holds.pop(key, None)
                    self._held.pop(key, None)
                    self._lost.discard(key)

    def lost(self, claim: ClaimResult) -> bool:
        """Whether a renewal found ``claim``'s row taken over by another run: send nothing more for it."""
        with self._lock:
            return id(claim) in self._lost

    def renew_all(self) -> None:
        """One pass: renew every claim held now. A ledger error is logged and retried on the next pass."""
        with self._lock:
            held = list(self._held.items())
        for key, held_claim in held:
            try:
                kept = renew(self._store, held_claim, lease_seconds=self._lease, now=self._clock())
            except BulletinError as exc:
                logger.warning("could not renew the lease of %s: %s", _name(held_claim), exc)
                continue
            if not kept:
                self._mark_lost(key, held_claim)

    def stop(self) -> None:
        """Stop renewing and wait for the thread; the claims still held keep the lease of their last renewal."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._lease / RENEWALS_PER_LEASE):
            self.renew_all()

    def _mark_lost(self, key: int, held_claim: ClaimResult) -> None:
        with self._lock:
            if key not in self._held:  # finished and released meanwhile: nothing was lost
                return
            self._lost.add(key)
        logger.warning(
            "the claim on %s lapsed and another run took it over: this run sends nothing more for it",
            _name(held_claim),
        )


def _name(held_claim: ClaimResult) -> str:
    row = held_claim.row
    return f"{row.recipient}/{row.format}/{row.channel} (run key {row.run_key}, attempt {row.attempts})"
