"""Real task workers for the tests: N processes of one engine on the test database.

The workers are separate processes (``manage.py db_worker``, ``celery
worker``) with :mod:`tests.workers.worker_settings`: they reach the test
database by name, so the tests using them are transactional (what a test
writes must be committed for a worker to see it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.webhooks.conftest import make_payment  # noqa: F401 - a fixture used here
from tests.workers.engines import redis_url, tasks_setting, worker_command

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerPool:
    """N worker processes of one engine; each logs the events it settled to its own file."""

    engine: str
    size: int
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        db = connection.settings_dict
        env = dict(os.environ)
        # The test database, by name (the workers are not a test run).
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT']}/{db['NAME']}"
        )
        env["DJANGO_SETTINGS_MODULE"] = "tests.workers.worker_settings"
        env["ESCROW_WORKER_BASE_SETTINGS"] = os.environ.get(
            "DJANGO_SETTINGS_MODULE", "tests.settings"
        )
        env["ESCROW_TASK_ENGINE"] = self.engine
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        return env

    def start(self) -> None:
        env = self.environment()
        for n in range(self.size):
            name = f"w{n}-{os.getpid()}"
            log = self.logs / f"{name}.log"
            stderr = (self.logs / f"{name}.stderr").open("wb")
            self.procs.append(
                subprocess.Popen(
                    worker_command(self.engine, sys.executable, name),
                    cwd=ROOT,
                    env={**env, "ESCROW_WORKER_LOG": str(log)},
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                errors = "\n".join(p.read_text()[-3000:] for p in self.logs.glob("*.stderr"))
                raise AssertionError(f"a worker exited ({proc.returncode}):\n{errors}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def settled(self) -> Counter[tuple[str, str]]:
        """(event id, state) -> how many times a worker settled it so."""
        lines: Counter[tuple[str, str]] = Counter()
        for records in self.records():
            for _, event_id, status in records:
                lines[event_id, status] += 1
        return lines

    def records(self) -> list[list[tuple[float, str, str]]]:
        """Each worker's (time, event id, state) lines, in the order it settled them."""
        workers = []
        for path in sorted(self.logs.glob("*.log")):
            lines = []
            # A failure's line is followed by its traceback: only SETTLED lines count.
            for line in path.read_text().splitlines():
                if line.startswith("SETTLED "):
                    _, stamp, event_id, status = line.split(" ")
                    lines.append((float(stamp), event_id, status))
            workers.append(lines)
        return workers

    def busy_seconds(self) -> float:
        """From the first event any worker settled to the last (worker start-up excluded)."""
        stamps = [stamp for records in self.records() for stamp, _, _ in records]
        return max(stamps) - min(stamps) if len(stamps) > 1 else 0.0


@pytest.fixture
def worker_pool(tmp_path: Path, settings: Any) -> Iterator[Callable[[str, int], WorkerPool]]:
    """``worker_pool(engine, n)``: this process enqueues on ``engine``; start the pool yourself."""
    pools: list[WorkerPool] = []

    def make(engine: str, size: int) -> WorkerPool:
        if engine == "celery":
            url = redis_url()
            if not url:
                pytest.skip(
                    "Celery worker tests need Redis: set REDIS_URL, e.g. "
                    'export "$(bash scripts/redis.sh start)"'
                )
            import redis

            redis.Redis.from_url(url).flushdb()
        settings.TASKS = tasks_setting(engine)
        logs = tmp_path / f"{engine}-{size}"
        logs.mkdir()
        pool = WorkerPool(engine, size, logs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop()


def wait_until(done: Callable[[], bool], pool: WorkerPool, timeout: float = 600) -> float:
    """Poll ``done`` while the workers run; the seconds it took."""
    start = time.perf_counter()
    while not done():
        pool.check_alive()
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"the workers did not finish within {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - start


@pytest.fixture(autouse=True)
def _only_primary_settings() -> None:
    # The engines are proved once: the swapped-models run adds nothing here
    # but minutes of CI time.
    if os.environ.get("DJANGO_SETTINGS_MODULE", "tests.settings") != "tests.settings":
        pytest.skip("the real-worker tests run under tests.settings only")
