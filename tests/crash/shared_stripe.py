"""The simulated Stripe, shared by the test process and the server processes.

The package's simulated Stripe (:data:`~django_escrow_connect.simulation.simulated_stripe`)
lives in process memory. Here its state is kept in one pickled file in the
crash directory (``ESCROW_CRASH_DIR``): every gateway call, in any process,
runs inside :meth:`SharedStripe.session`, which takes an exclusive ``flock``,
loads the file into the process's store, runs the call and saves the store
back. Stripe's side therefore survives the death of the process that asked
for it, as the real Stripe's would.

Besides the store, the file holds:

- ``handled``: ids of the events the test already delivered (or dropped);
  every other event of the store is *queued*, waiting for the test to decide
  whether and when it reaches a webhook endpoint;
- ``money_calls``: one record per money call, in every process (method,
  process role and pid, whether a database transaction was open).

The crash plan (which money call blocks, before or after Stripe acts) and
the marker a blocked call writes are small JSON files next to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django_escrow_connect.simulation import simulated_stripe

#: Attributes of the store that are not Stripe's data.
_TRANSIENT = frozenset({"lock", "_outbox", "_request", "_failures"})
STATE = "stripe.pickle"
LOCK = "stripe.lock"
PLAN = "plan.json"
FIRED = "plan.fired.json"
MARKER = "blocked.json"


class SharedStripe:
    """The simulated store of this process, mirrored in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._lock_file: Any = None
        self.extra: dict[str, Any] = {"handled": set(), "money_calls": []}

    @property
    def store(self) -> Any:
        return simulated_stripe

    # --- the store --------------------------------------------------------------

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Load the shared state, run the block, save it (re-entrant in a process)."""
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._lock_file = open(self.directory / LOCK, "ab")  # noqa: SIM115
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                if outermost:
                    self._load()
                try:
                    yield self.store
                finally:
                    # Stripe keeps what it did, whatever became of the caller.
                    if outermost:
                        self._save()
            finally:
                self._depth -= 1
                if outermost:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    def reset(self) -> None:
        """An empty Stripe, nothing queued, no plan, no marker."""
        with self.session():
            self.store.reset()
            self.extra = {"handled": set(), "money_calls": []}
        for name in (PLAN, FIRED, MARKER):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()

    def _load(self) -> None:
        store = self.store
        try:
            with open(self.directory / STATE, "rb") as file:
                state = pickle.load(file)  # our own file, written below
        except FileNotFoundError:
            state = None
        with store.lock:
            store.reset()
            if state is not None:
                for name, value in state["store"].items():
                    setattr(store, name, value)
        self.extra = state["extra"] if state is not None else {"handled": set(), "money_calls": []}

    def _save(self) -> None:
        store = self.store
        with store.lock:
            data = {k: v for k, v in store.__dict__.items() if k not in _TRANSIENT}
            payload = pickle.dumps({"store": data, "extra": self.extra})
        target = self.directory / STATE
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(payload)
        os.replace(temporary, target)

    # --- events -----------------------------------------------------------------

    def queued_events(self) -> list[dict[str, Any]]:
        """Events Stripe emitted that the test has not delivered or dropped, oldest first."""
        with self.session() as store:
            return [
                dict(event) for event_id, event in store.events.items()
                if event_id not in self.extra["handled"]
            ]  # fmt: skip

    def mark_handled(self, event_ids: list[str]) -> None:
        with self.session():
            self.extra["handled"].update(event_ids)

    # --- money calls --------------------------------------------------------------

    def record_money_call(self, method: str, role: str, in_atomic_block: bool) -> None:
        with self.session():
            self.extra["money_calls"].append(
                {"method": method, "role": role, "pid": os.getpid(), "in_atomic": in_atomic_block}
            )

    def money_calls(self) -> list[dict[str, Any]]:
        with self.session():
            return list(self.extra["money_calls"])

    # --- the crash plan -------------------------------------------------------------

    def write_plan(self, method: str, when: str, *, hold: float = 20.0, skip: int = 0) -> None:
        """The next ``method`` call in a server blocks ``when`` (before/after) Stripe acts.

        ``skip``: that many ``method`` calls go through first (the second
        payee's transfer of a split release, say).
        """
        assert when in ("before", "after"), when
        for name in (FIRED, MARKER):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / name).unlink()
        _write_json(
            self.directory / PLAN, {"method": method, "when": when, "hold": hold, "skip": skip}
        )

    def take_plan(self, method: str) -> dict[str, Any] | None:
        """The plan for ``method``, consumed (only one call ever takes it), or None."""
        path = self.directory / PLAN
        try:
            plan = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        if plan.get("method") != method:
            return None
        if plan.get("skip", 0) > 0:
            # Calls in one request are sequential: no other taker races this.
            _write_json(path, {**plan, "skip": plan["skip"] - 1})
            return None
        try:
            os.rename(path, self.directory / FIRED)  # atomic: one taker
        except FileNotFoundError:
            return None
        return dict(plan)

    def clear_plan(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PLAN).unlink()

    def block(self, plan: dict[str, Any], method: str) -> None:
        """Write the marker, then wait to be killed (raise if nobody does)."""
        _write_json(
            self.directory / MARKER,
            {"pid": os.getpid(), "method": method, "when": plan["when"], "at": time.time()},
        )
        deadline = time.monotonic() + float(plan.get("hold", 20.0))
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError(f"crash plan {plan}: blocked {method} was never killed")

    def wait_for_marker(self, timeout: float) -> dict[str, Any]:
        path = self.directory / MARKER
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return dict(json.loads(path.read_text()))
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
        raise TimeoutError(f"no process blocked within {timeout}s (no {path})")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


_shared: dict[str, SharedStripe] = {}
_shared_lock = threading.Lock()


def shared_stripe(directory: str | Path | None = None) -> SharedStripe:
    """The :class:`SharedStripe` of ``directory`` (default: ``ESCROW_CRASH_DIR``)."""
    directory = str(directory or os.environ["ESCROW_CRASH_DIR"])
    with _shared_lock:
        if directory not in _shared:
            _shared[directory] = SharedStripe(Path(directory))
        return _shared[directory]
