"""`offers serve --workers N` (N > 1): load the app once, then fork the workers.

Why: uvicorn's own `--workers` spawns N fresh interpreters. Each one imports NumPy, pandas,
pyarrow, LightGBM, FastAPI and MLflow and loads the model (~300 MB), and the supervisor that ran
the start-up checks keeps ~330 MB more: two workers cost ~2.8x one (README, serving memory).
Here the supervisor builds the app once (the Scorer, its compiled forest, the mapped feature
copy), freezes the garbage collector's view of it, binds the socket and forks. The workers share
those pages copy-on-write and pay only for the pages they write.

Why forking is safe here: GNU OpenMP is not fork-safe (a child hangs in its first parallel
region when the parent had a thread pool: seen here, a worker's model reload never returned), so
the supervisor caps OpenMP at one thread before it loads anything (serving predicts on one
thread anyway, `num_threads=1`; the workers are the parallelism); the audit log opens its descriptor per process; redis-py's
connection pool reconnects in a new process; the reload watcher starts in each worker's
lifespan, after the fork, and checks once before the first request. A worker forked later (to
replace one that died) starts from the supervisor's older state, and that first check reloads it
if an erasure or a promotion happened since.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn

log = logging.getLogger(__name__)

MIN_UPTIME_S = 10.0  # a worker that dies sooner is failing at start: stop instead of looping
STOP_GRACE_S = 30.0  # in-flight requests get this long after SIGTERM, then SIGKILL
STARTUP_FAILED = 3  # a worker's exit status when its app did not start (uvicorn's own code)
POLL_S = 0.2  # how often the supervisor looks at its workers and its stop flag
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WorkerFailed(RuntimeError):
    """A worker died within MIN_UPTIME_S of its start: restarting it would only loop."""


@dataclass
class Supervisor:
    """Forks `workers` copies of one loaded uvicorn server and keeps them running."""

    config: uvicorn.Config
    workers: int
    sock: socket.socket | None = None
    started: dict[int, float] = field(default_factory=dict)  # pid -> monotonic start
    stopping: bool = False

    def run(self) -> None:
        """Load, bind, fork, supervise; returns after a stop signal and every worker's exit."""
        single_threaded_openmp()
        if not self.config.loaded:
            self.config.load()  # the app factory runs here, once, before any fork
        self.sock = self.config.bind_socket()
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._ask_stop)
        _freeze_heap()
        try:
            for _ in range(self.workers):
                self._fork()
            self._supervise()
        finally:
            self._stop_workers()
            self.sock.close()

    def _ask_stop(self, signum: int, _frame: object) -> None:
        log.info("supervisor %d: %s, stopping workers", os.getpid(), signal.Signals(signum).name)
        self.stopping = True

    def _fork(self) -> None:
        pid = os.fork()
        if pid == 0:
            _worker(self.config, self.sock)  # never returns
        self.started[pid] = time.monotonic()
        log.info("supervisor %d: worker %d started", os.getpid(), pid)

    def _supervise(self) -> None:
        while not self.stopping:
            time.sleep(POLL_S)
            for pid, status in _reap():
                if pid not in self.started:  # not a worker (a helper process of the app)
                    continue
                lived = time.monotonic() - self.started.pop(pid)
                if self.stopping:
                    continue
                why = _exit_reason(status)
                if lived < MIN_UPTIME_S:
                    raise WorkerFailed(
                        f"worker {pid} {why} {lived:.1f} s after it started: not restarting "
                        "(see its log above)"
                    )
                log.warning("worker %d %s after %.0f s: starting another", pid, why, lived)
                self._fork()

    def _stop_workers(self) -> None:
        for pid in self.started:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.started and time.monotonic() < deadline:
            for pid, _status in _reap():
                self.started.pop(pid, None)
            time.sleep(POLL_S / 2)
        for pid in list(self.started):
            log.warning("worker %d still running %.0f s after SIGTERM: SIGKILL", pid, STOP_GRACE_S)
            _signal(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.started.pop(pid)


def single_threaded_openmp() -> None:
    """One OpenMP thread in this process and its forks: no pool a forked worker could hang on."""
    import lightgbm  # noqa: F401  (loads libgomp, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


def _freeze_heap() -> None:
    """Move every live object to the permanent generation: the workers' collections then never
    write to the pages they share with the supervisor (Python's docs, gc.freeze)."""
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:  # a forked child would inherit locks those threads may hold
        raise RuntimeError(f"refusing to fork workers while threads run: {threads}")
    gc.collect()
    gc.freeze()


def _worker(config: uvicorn.Config, sock: socket.socket | None) -> None:
    """The forked child: serve on the shared socket until told to stop, then exit."""
    for sig in STOP_SIGNALS:
        # uvicorn installs its own handlers while it serves, and re-raises the signal it got
        # once it has shut down: then (or before it serves) the worker just leaves.
        signal.signal(sig, _leave)
    code = STARTUP_FAILED
    try:
        server = uvicorn.Server(config)
        server.run(sockets=[sock] if sock is not None else None)
        code = 0 if server.started else STARTUP_FAILED
    except BaseException:  # the child must never return into the supervisor's loop
        log.exception("worker %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)


def _leave(_signum: int, _frame: object) -> None:
    logging.shutdown()
    os._exit(0)


def _reap() -> list[tuple[int, int]]:
    """Every exited child not yet waited for: (pid, wait status)."""
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        log.info("worker %d had already exited", pid)


def serve_forked(config: uvicorn.Config, workers: int) -> None:
    """`offers serve --workers N`: see the module docstring."""
    if not hasattr(os, "fork"):
        raise WorkerFailed(
            "--workers N > 1 needs os.fork (Linux, macOS); run one worker per process"
        )
    Supervisor(config, workers).run()
