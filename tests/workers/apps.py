"""A handler that fails every time, installed only in the worker processes."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig

#: Events of this type fail on every try: the poisoned event of tests/workers.
POISON_TYPE = "escrow_test.poisoned"


def poisoned(context: Any) -> None:
    raise RuntimeError(f"poisoned event {context.id}")


class PoisonedHandlerConfig(AppConfig):
    name = "tests.workers"
    label = "escrow_workers_poison"

    def ready(self) -> None:
        from django_escrow_connect.webhooks import registry

        registry.HANDLERS[POISON_TYPE] = registry.Route(poisoned, registry.PLATFORM)
