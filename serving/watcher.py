"""ReloadWatcher: every worker reloads soon after an erasure or a reload asked of any worker."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from serving.signatures import Signature, signature
from serving.state import watched_paths

if TYPE_CHECKING:
    from serving.scorer import Scorer

log = logging.getLogger(__name__)


class ReloadWatcher:
    """Reloads a Scorer when the erasure register or the reload marker changes (or the compiled
    forest it waits for was built in the background, or the online store switched).

    Why: `POST /v1/reload` reaches one worker of `offers serve --workers N`, and an erasure must
    reach them all, and soon. From a background thread (never the request path) the watcher
    stats two small files every `interval_s` seconds and runs the same full reload, which also
    drops an erased user's in-memory feature rows. A failed reload keeps the old state, is
    logged once per change and retried every tick.
    """

    def __init__(self, scorer: Scorer, interval_s: float) -> None:
        self.scorer = scorer
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._failed: tuple[Signature, ...] | None = None
        self._thread = threading.Thread(target=self._run, name="erasure-watcher", daemon=True)

    def check(self) -> bool:
        """Reload when the register differs from what the state read; True when it did."""
        now = tuple(signature(p) for p in watched_paths(self.scorer.home))
        compiled_ready = self.scorer.state.compiled.ready()  # a background build finished
        if now == self.scorer.state.watched and not compiled_ready and not self._online_switched():
            return False
        try:
            self.scorer.reload()
        except (LookupError, OSError, ValueError, RuntimeError):
            if now != self._failed:  # log once per change, retry every tick
                log.exception("watched reload failed; retrying every %.1f s", self.interval_s)
            self._failed = now
            return False
        return True

    def _online_switched(self) -> bool:
        """An online store's pointer moved to another snapshot (one GET per tick)."""
        online = self.scorer.state.online
        if online is None:
            return False
        try:
            return online.poll()
        except RuntimeError as exc:  # OnlineStoreError: retried next tick
            log.warning("online store not reachable from the watcher: %s", exc)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()

    def start(self) -> ReloadWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
