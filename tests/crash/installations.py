"""A second installation of the package on the same Stripe account.

Its own PostgreSQL database (a copy of the empty test database, so it is
migrated), its own ``IDEMPOTENCY_KEY_PREFIX`` and its own gunicorn server,
sharing the file-backed simulated Stripe with the first installation (the
test database and the ``main`` server). :meth:`Installation.use` points the
test process's default connection at its database for a block (set-up and
reads), as a second host's own process would be.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.db import connections
from django.test import override_settings

from .server import Server


@dataclass
class Installation:
    db_name: str
    prefix: str
    server: Server | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[None]:
        """Run the block as this installation (its database and key prefix)."""
        connection = connections["default"]
        connection.close()
        saved = connection.settings_dict["NAME"]
        connection.settings_dict["NAME"] = self.db_name
        escrow = {**settings.ESCROW_CONNECT, "IDEMPOTENCY_KEY_PREFIX": self.prefix}
        try:
            with override_settings(ESCROW_CONNECT=escrow):
                yield
        finally:
            connection.close()
            connection.settings_dict["NAME"] = saved


def _admin_connection() -> Any:
    params = connections["default"].settings_dict
    return psycopg.connect(
        host=params.get("HOST") or None,
        port=params.get("PORT") or None,
        user=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


def copy_test_database(name: str, timeout: float = 15.0) -> None:
    """``CREATE DATABASE name TEMPLATE <test database>`` (waits for other sessions to leave)."""
    template = connections["default"].settings_dict["NAME"]
    connections.close_all()
    deadline = time.monotonic() + timeout
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        while True:
            try:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def drop_database(name: str) -> None:
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
