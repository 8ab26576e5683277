"""Compiled trees: the champion's forest as native code (LLVM, via lleaves) behind the Scorer.

Why: LightGBM's predict walks every tree through a generic interpreter; compiled, each tree is
branches, and a request's 100 rows take a fraction of the time (README, serving benchmark). The
code (serving.leafcode) gives each row's leaf in every tree: the score is the leaves' outputs
added in LightGBM's order, the reasons of the returned offers come from the same leaves, so one
native call serves both. It is trusted only once, on real rows of the snapshot (and the same
rows with their columns shuffled, to reach more branches), its leaves equal LightGBM's
`pred_leaf` and its scores `Booster.predict` within TOLERANCE; otherwise serving keeps the
leaf-sum path and says why (log, /readyz).

Compiling costs a minute or two for 300 trees, so the object code is cached under
OFFERS_HOME/serving/compiled/<model>/v<version>/, one file per (model text, compiler, CPU): a
JSON header line (hashes) then the code, written aside and renamed. A file whose key, model
hash or code checksum does not match is rebuilt, never loaded (truncated object code would crash
the loader); one that loads but disagrees with the Booster, or was built for another shape of
model, is deleted and the worker falls back (the next load rebuilds it). Workers starting
together take a lock: one compiles, the others load its file. `OFFERS_COMPILED=off` turns the
whole thing off; lleaves is the `fast` extra.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

import lightgbm as lgb
import numpy as np

from serving import leafcode
from serving.leafcode import CompiledForest
from serving.signatures import Signature, signature

log = logging.getLogger(__name__)

COMPILED_ENV = "OFFERS_COMPILED"  # auto (default), background (`offers serve`'s default), off
AUTO = "auto"  # compile now when no entry is cached, then use it if it checks out
BACKGROUND = "background"  # no entry: leaf sums now, compiled once a background build caches it
OFF = "off"
SETTINGS = (AUTO, BACKGROUND, OFF)
TOLERANCE = 1e-9  # largest |compiled - Booster.predict| accepted on the check rows
CACHE_DIR = ("serving", "compiled")  # under OFFERS_HOME
FORMAT = "offers-compiled-forest/2"  # /2: leaf indices (serving.leafcode), /1 summed scores
_SEED = 20250601  # the column shuffle of the check rows: the same rows on every load
_MEMO_SIZE = 4
IN_PROCESS_MAX_CHARS = 256_000  # larger model texts compile in a child process (compile_code)
_compiled_here: dict[str, bytes] = {}  # key -> code this process compiled: a rebuild reuses it


def compiled_setting(env: Mapping[str, str] | None = None) -> str:
    """OFFERS_COMPILED: auto (default), background or off; anything else is refused, naming the
    variable."""
    env = os.environ if env is None else env
    value = env.get(COMPILED_ENV, "").strip().lower() or AUTO
    if value not in SETTINGS:
        raise ValueError(f"{COMPILED_ENV}={value!r}: expected one of {', '.join(SETTINGS)}")
    return value


@dataclass(frozen=True)
class CompiledChoice:
    """What the state scores with and why (shown by /readyz)."""

    forest: CompiledForest | None
    setting: str
    why: str
    pending: Path | None = None  # the entry a background build will write (BACKGROUND)
    pending_from: Signature = None  # that entry's signature when the build was started

    def ready(self) -> bool:
        """The background build finished (an entry written or a failure recorded): reload."""
        if self.pending is None:
            return False
        return signature(self.pending) != self.pending_from or _failed(self.pending).exists()

    def describe(self) -> dict[str, str]:
        return {"setting": self.setting, "compiled": self.forest is not None, "why": self.why}


def choose_compiled(
    booster: lgb.Booster, probe: np.ndarray, home: Path, model_name: str, model_version: str
) -> CompiledChoice:
    """The compiled forest when the setting allows it and it agrees with the Booster."""
    setting = compiled_setting()
    if setting == OFF:
        return CompiledChoice(None, setting, f"{COMPILED_ENV}=off")
    if importlib.util.find_spec("lleaves") is None:
        return CompiledChoice(
            None, setting, "lleaves is not installed (pip install 'offers[fast]')"
        )
    if len(probe) == 0:
        return CompiledChoice(None, setting, "no snapshot rows to check a compiled forest against")
    model_text = booster.model_to_string()
    try:
        leafcode.check_supported(model_text)  # before minutes of compiling, not after
    except ValueError as exc:
        return CompiledChoice(None, setting, f"not compiled: {exc}")
    path = entry_path(home, model_name, model_version, model_text)
    if setting == BACKGROUND and read_entry(path, model_text)[0] is None:
        return compile_later(path, model_text)
    try:
        code, origin = _cached_or_compiled(path, model_text)
        forest = CompiledForest(model_text, code)
    except leafcode.ShapeMismatchError as exc:  # code of another model under this entry's name
        return _refused(path, setting, f"compiled forest ({exc})")
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("compiled forest unavailable, scoring with the Booster: %s", exc)
        return CompiledChoice(None, setting, f"compiling failed: {exc}")
    rows = check_rows(probe)
    wrong, diff = disagreement(forest, booster, rows)
    if wrong:
        return _refused(
            path, setting, f"compiled forest ({origin}) puts {wrong} of {len(rows)} check rows in other "
            "leaves than Booster pred_leaf",
        )  # fmt: skip
    if not diff <= TOLERANCE:  # NaN fails too
        return _refused(
            path, setting, f"compiled forest ({origin}) differs from Booster.predict by {diff:.3g} > "
            f"{TOLERANCE:g} on the check rows",
        )  # fmt: skip
    why = (
        f"native leaves ({origin}) equal Booster pred_leaf on {len(rows)} rows, "
        f"max |compiled - Booster.predict| {diff:.1e}"
    )
    log.info("compiled forest for %s v%s: %s", model_name, model_version, why)
    return CompiledChoice(forest, setting, why)


def _refused(path: Path, setting: str, what: str) -> CompiledChoice:
    """An entry that does not check out is deleted: the next load rebuilds it."""
    path.unlink(missing_ok=True)
    why = f"{what}; cache entry removed, the next load rebuilds it"
    log.warning("%s: scoring with the Booster", why)
    return CompiledChoice(None, setting, why)


def compile_later(path: Path, model_text: str) -> CompiledChoice:
    """Start the build of `path` in a detached process (unless one runs or one failed) and
    serve leaf sums meanwhile; the ReloadWatcher reloads once `ready()`."""
    failed = _failed(path)
    if failed.exists():
        why = failed.read_text(encoding="utf-8", errors="replace").strip()[-300:]
        return CompiledChoice(
            None, BACKGROUND, f"background compile failed ({why}); delete {failed} to retry"
        )
    before = signature(path)
    if not _being_built(path):
        # Its own copy: loads reloading together may each start a build, and a build deletes
        # its copy when done (a shared one could be gone before another build read it).
        model_file = path.with_name(f".{path.stem}.model-{uuid.uuid4().hex}.txt")
        model_file.write_text(model_text, encoding="utf-8")
        _background.append(
            subprocess.Popen(
                [sys.executable, "-c", _BUILD_IN_BACKGROUND, str(path), str(model_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # outlives a worker that stops meanwhile
            )
        )
    _background[:] = [p for p in _background if p.poll() is None]  # reap finished builds
    why = f"compiling {path.name} in the background; leaf sums until it is cached"
    log.info("%s", why)
    return CompiledChoice(None, BACKGROUND, why, pending=path, pending_from=before)


def _being_built(path: Path) -> bool:
    """Another process holds the entry's lock (it is compiling it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def build_entry(path: str, model_file: str) -> None:
    """The background process: compile and cache the entry, or record why it failed."""
    entry, model = Path(path), Path(model_file)
    try:
        _cached_or_compiled(entry, model.read_text(encoding="utf-8"))
    except Exception as exc:
        _failed(entry).write_text(f"{type(exc).__name__}: {exc}", encoding="utf-8")
        raise
    finally:
        model.unlink(missing_ok=True)


def _failed(path: Path) -> Path:
    return path.with_suffix(".failed")


_BUILD_IN_BACKGROUND = (
    "import sys; from serving.compiled import build_entry; build_entry(sys.argv[1], sys.argv[2])"
)
_background: list[subprocess.Popen] = []  # builds this process started


def check_rows(probe: np.ndarray) -> np.ndarray:
    """The snapshot's rows and the same rows with each column shuffled (more branches)."""
    return np.vstack([probe, np.random.default_rng(_SEED).permuted(probe, axis=0)])


def disagreement(
    forest: CompiledForest, booster: lgb.Booster, rows: np.ndarray
) -> tuple[int, float]:
    """(rows whose leaves differ from `pred_leaf`, largest |compiled - Booster.predict|)."""
    leaves, scores = forest.leaves_and_scores(rows)
    expected = booster.predict(rows, pred_leaf=True, num_threads=1)
    wrong = int(np.any(leaves != expected.reshape(leaves.shape), axis=1).sum())
    diff = np.abs(scores - booster.predict(rows, num_threads=1))
    return wrong, float(np.max(diff))


# ------------------------------------------------------------------------------ the cache


@cache
def _toolchain() -> dict[str, str]:
    """What the object code depends on besides the model: compiler versions and this CPU."""
    import llvmlite
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot read them on some hosts; lleaves then compiles without
        features = ""
    return {
        "lleaves": version("lleaves"),
        "llvmlite": llvmlite.__version__,
        "triple": llvm.get_process_triple(),
        "cpu": llvm.get_host_cpu_name(),
        "cpu_features": features,
        "options": json.dumps(leafcode.OPTIONS, sort_keys=True),
    }


def entry_path(home: Path, model_name: str, model_version: str, model_text: str) -> Path:
    """OFFERS_HOME/serving/compiled/<model>/v<version>/forest-<key>.bin."""
    key = _key(model_text)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_name)
    return Path(home).joinpath(*CACHE_DIR, safe, f"v{model_version}", f"forest-{key[:24]}.bin")


def _key(model_text: str) -> str:
    parts = {"model_sha256": _sha(model_text.encode()), **_toolchain()}
    return _sha(json.dumps(parts, sort_keys=True).encode())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_entry(path: Path, model_text: str) -> tuple[bytes | None, str]:
    """(code, "") from a sound entry for this model, else (None, why it is not used)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None, "no cached entry"
    head, sep, code = blob.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return None, "unreadable header"
    if header.get("model_sha256") != _sha(model_text.encode()):
        return None, "built from another model"
    if header.get("key") != _key(model_text):
        return None, "built by another compiler or for another CPU"
    if header.get("code_bytes") != len(code) or header.get("code_sha256") != _sha(code):
        return None, "object code does not match its checksum"
    return code, ""


def _cached_or_compiled(path: Path, model_text: str) -> tuple[bytes, str]:
    """The cached code, or code compiled now and cached (one compiler per entry at a time)."""
    code, why = read_entry(path, model_text)
    if code is not None:
        return code, f"cached {path.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be compiling this very entry
        code, why = read_entry(path, model_text)
        if code is not None:
            return code, f"cached {path.name} by another worker"
        if why != "no cached entry":
            log.warning("compiled forest cache %s not used (%s): rebuilding it", path, why)
        started = time.monotonic()
        code = _compiled_here.get(_key(model_text)) or compile_code(model_text)
        seconds = time.monotonic() - started
        try:
            write_entry(path, model_text, code)
        except OSError as exc:
            log.warning("compiled forest not cached at %s: %s", path, exc)
            return code, f"compiled in {seconds:.0f} s, not cached: {exc}"
    return code, f"compiled in {seconds:.0f} s ({why}), cached {path.name}"


def write_entry(path: Path, model_text: str, code: bytes) -> None:
    """Header line and code, written aside, fsynced and renamed: never half an entry."""
    header = {
        "format": FORMAT,
        "key": _key(model_text),
        "model_sha256": _sha(model_text.encode()),
        "code_sha256": _sha(code),
        "code_bytes": len(code),
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n" + code)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def compile_code(model_text: str) -> bytes:
    """Object code for this host from LightGBM's model text.

    A large model compiles in a short-lived process: LLVM keeps hundreds of MB after compiling
    300 trees (a server that compiled in process held 777 MB RSS, one that loaded the cached
    code 431 MB), and no server should keep them. A small one compiles here: starting a Python
    process costs more than its compile (30 trees: 0.3 s here, 6 s in a child).
    """
    with tempfile.TemporaryDirectory(prefix="offers-compile-") as tmp:
        model_file, code_file = Path(tmp, "model.txt"), Path(tmp, "forest.o")
        model_file.write_text(model_text, encoding="utf-8")
        if len(model_text) <= IN_PROCESS_MAX_CHARS:
            leafcode.compile_file(str(model_file), str(code_file))
        else:
            _compile_in_child(model_file, code_file)
        code = code_file.read_bytes()
    while len(_compiled_here) >= _MEMO_SIZE:
        _compiled_here.pop(next(iter(_compiled_here)))
    _compiled_here[_key(model_text)] = code
    return code


def _compile_in_child(model_file: Path, code_file: Path) -> None:
    child = "import sys; from serving.leafcode import compile_file; compile_file(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", child, str(model_file), str(code_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"compiling the leaf forest failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
