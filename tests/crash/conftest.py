"""Fixtures of the crash suite: the shared Stripe, the gunicorn servers, a world per test.

The suite needs PostgreSQL (the server processes share the test database
with pytest, which SQLite's in-memory database cannot do) and gunicorn
(the ``test`` extra); without them every test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections

from django_escrow_connect import simulation as simulated
from tests.payments.conftest import configure

from .harness import World
from .installations import Installation, copy_test_database, drop_database
from .server import Server, process_gone
from .shared_stripe import MARKER, SharedStripe, shared_stripe

HERE = Path(__file__).resolve().parent
CRASH_GATEWAY = "tests.crash.gateway.CrashGateway"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    engine = django_settings.DATABASES["default"]["ENGINE"]
    reason = None
    if "postgresql" not in engine:
        reason = (
            f"crash matrix: real server processes share the test database, PostgreSQL only "
            f"(running on {engine.rsplit('.', 1)[-1]}); CI runs it on PostgreSQL via "
            'scripts/test.sh; locally: export "$(bash scripts/pg.sh start)"'
        )
    elif importlib.util.find_spec("gunicorn") is None:
        reason = "crash matrix: gunicorn is not installed (pip install -e '.[test]')"
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(skip)


class Servers:
    """gunicorn servers on the test database, started on first use, stopped at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: dict[str, Server] = {}

    def env(self, db_name: str, **extra: str) -> dict[str, str]:
        return {
            "ESCROW_CRASH_DIR": str(self.directory),
            "ESCROW_CRASH_DB_NAME": db_name,
            "ESCROW_CRASH_BASE_SETTINGS": os.environ.get(
                "DJANGO_SETTINGS_MODULE", "tests.settings"
            ),
            **extra,
        }

    def get(self, name: str = "main", *, timeout: int = 30) -> Server:
        """The shared server ``name`` (``slow``: worker timeout of 2 s)."""
        server = self.running.get(name)
        if server is None or server.process is None or server.process.poll() is not None:
            server = self.start(name, connections["default"].settings_dict["NAME"], timeout)
        return server

    def start(self, name: str, db_name: str, timeout: int = 30, **extra: str) -> Server:
        server = Server(
            name=name,
            env=self.env(db_name, **extra),
            log_path=self.directory / f"server-{name}.log",
            timeout=timeout,
        )
        self.running[name] = server
        return server.start()

    def stop(self, name: str) -> None:
        server = self.running.pop(name, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@pytest.fixture(scope="session")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash")


@pytest.fixture(scope="session")
def servers(django_db_setup: Any, crash_dir: Path) -> Iterator[Servers]:
    pool = Servers(crash_dir)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def shared(crash_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SharedStripe]:
    """The shared simulated Stripe, empty; the test process never delivers events itself."""
    monkeypatch.setenv("ESCROW_CRASH_DIR", str(crash_dir))
    monkeypatch.setenv("ESCROW_CRASH_ROLE", "test")
    store = shared_stripe(crash_dir)
    store.reset()
    previous = simulated.set_event_sink(lambda endpoint, payload, signature: None)
    try:
        yield store
    finally:
        simulated.set_event_sink(previous)
        _kill_blocked(crash_dir)
        store.reset()
        simulated.reset()


def _kill_blocked(crash_dir: Path) -> None:
    """A worker still blocked when the test ended (it failed early): kill it."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        import json

        pid = int(json.loads((crash_dir / MARKER).read_text())["pid"])
        if not process_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def world(transactional_db: Any, settings: Any, shared: SharedStripe, servers: Servers) -> World:
    """A marketplace on the shared Stripe, and the main server (SCT by default)."""
    configure(settings, GATEWAY=CRASH_GATEWAY, MONEY_OPERATION_LEASE_SECONDS=0)
    return World.build(shared, servers.get("main"))


@pytest.fixture
def slow_server(servers: Servers) -> Server:
    """A server whose worker gunicorn kills after 2 s (``--timeout 2``)."""
    return servers.get("slow", timeout=2)


@pytest.fixture
def installation_b(
    transactional_db: Any, shared: SharedStripe, servers: Servers
) -> Iterator[Installation]:
    """A second installation (own database and key prefix) on the same Stripe.

    Request it before ``world``: its database copies the test database while empty.
    """
    name = f"{connections['default'].settings_dict['NAME']}_b"
    copy_test_database(name)
    installation = Installation(db_name=name, prefix="install_b")
    try:
        installation.server = servers.start("b", name, ESCROW_CRASH_KEY_PREFIX=installation.prefix)
        yield installation
    finally:
        servers.stop("b")
        connections.close_all()
        drop_database(name)
