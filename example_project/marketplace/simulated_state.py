"""Keep the simulated Stripe's memory in a file, in simulated mode.

The package's simulated gateway keeps Stripe's side (accounts, payment
intents, charges, transfers, ...) in process memory. The demo's database
outlives a process: ``seed_demo`` runs in one process, ``runserver`` in
another, and the autoreloader restarts the server on every code change. So
the example saves the simulated store to ``SIMULATED_STRIPE_STATE_FILE`` (a
small SQLite file holding one JSON snapshot from the package's public
``dump_state()``) after each request (and each command) that changed it, and
loads it again (``load_state()``) when another process wrote it.
An exclusive file lock serialises processes; this is a development
convenience, not something to run in production.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from django_escrow_connect import simulation

logger = logging.getLogger("marketplace")

_CREATE = "CREATE TABLE IF NOT EXISTS simulated_stripe_state (id INTEGER PRIMARY KEY, data BLOB)"


def _fingerprint(state: dict[str, Any]) -> str:
    """What changed is what was saved: the state itself, as canonical JSON."""
    return json.dumps(state, sort_keys=True)


class SimulatedStateFile:
    """The simulated store, mirrored in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._thread_lock = threading.RLock()
        self._loaded_mtime: int | None = None
        self._fingerprint: str | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Load the file if another process changed it; save it afterwards if we did."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # flock() on the SQLite file itself: independent of SQLite's own
        # (fcntl) locks, and an empty file is an empty SQLite database.
        with self._thread_lock, open(self.path, "ab") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                self._load_if_changed()
                try:
                    yield
                finally:
                    self._save_if_changed()
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _load_if_changed(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._loaded_mtime:
            return
        try:
            state = self._read()
        except Exception:
            logger.exception("Ignoring unreadable simulated Stripe state %s", self.path)
            self._loaded_mtime = mtime
            return
        if state is None:  # an empty file: nothing saved yet
            self._loaded_mtime = mtime
            return
        try:
            simulation.load_state(state)
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring simulated Stripe state of another format: %s", self.path)
            self._loaded_mtime = mtime
            return
        self._loaded_mtime = mtime
        self._fingerprint = _fingerprint(simulation.dump_state())

    def _save_if_changed(self) -> None:
        fingerprint = _fingerprint(simulation.dump_state())
        if fingerprint == self._fingerprint and self._mtime() is not None:
            return
        payload = fingerprint.encode("utf-8")
        with contextlib.closing(sqlite3.connect(self.path)) as db, db:
            db.execute(_CREATE)
            db.execute("INSERT OR REPLACE INTO simulated_stripe_state VALUES (1, ?)", (payload,))
        self._loaded_mtime = self._mtime()
        self._fingerprint = fingerprint

    def _read(self) -> Any:
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            try:
                row = db.execute("SELECT data FROM simulated_stripe_state WHERE id = 1").fetchone()
            except sqlite3.OperationalError:  # no table yet: nothing was saved
                return None
        return json.loads(row[0]) if row else None

    def forget(self) -> None:
        """Delete the file (``seed_demo --reset``)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._loaded_mtime = None
        self._fingerprint = None


_state_file: SimulatedStateFile | None = None
_state_lock = threading.Lock()


def state_file() -> SimulatedStateFile | None:
    """The configured state file, or None (not simulated mode, or tests)."""
    global _state_file
    path = getattr(settings, "SIMULATED_STRIPE_STATE_FILE", None)
    if not path or not getattr(settings, "SIMULATED_STRIPE", False):
        return None
    with _state_lock:
        if _state_file is None or _state_file.path != Path(path):
            _state_file = SimulatedStateFile(Path(path))
        return _state_file


@contextlib.contextmanager
def simulated_session() -> Iterator[None]:
    """Run a block with the simulated Stripe state loaded and saved (if configured)."""
    current = state_file()
    if current is None:
        yield
        return
    with current.session():
        yield


class SimulatedStateMiddleware:
    """Wraps each request in :func:`simulated_session` (a no-op outside simulated mode)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with simulated_session():
            return self.get_response(request)
