"""Task mode on real engines: a shuffled backlog with duplicates, drained by N workers.

For each engine (django-tasks-db's ``db_worker``; Celery with Redis through
``django_escrow_connect.contrib.celery``) and 1, 2 and 4 worker processes:

- the same deliveries are first processed serially, in the request (sync
  mode), on a twin set of payments: that is the expected end state;
- then delivered in task mode (the request only verifies, records and
  enqueues), drained by the workers: every event is settled by exactly one
  worker exactly once (duplicates are enqueued but find nothing to do), and
  the payments end in the serial run's states;
- a poisoned event (its handler raises every time), delivered first, is
  retried by the engine with backoff, then left ``failed`` for the replay
  command, while the rest of the backlog goes through.

PostgreSQL only (the workers are other processes on the same database).
``ESCROW_WORKER_BACKLOG`` sets the deliveries per run (default 2,000 with
4 workers, 600 with 1 or 2);
``ESCROW_WORKER_RESULTS`` names a JSON-lines file to append each run's
timings to (``benchmarks/workers.py`` does).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from django_escrow_connect import swappable
from django_escrow_connect.gateway.signing import sign_webhook_payload
from django_escrow_connect.states import WebhookEventStatus as E
from django_escrow_connect.webhooks import pipeline
from tests.webhooks import stripe_objects as so
from tests.webhooks.conftest import PLATFORM_SECRET, Scene
from tests.webhooks.test_ordering import end_state, payment_lifecycle
from tests.workers.apps import POISON_TYPE
from tests.workers.conftest import WorkerPool, wait_until
from tests.workers.engines import ENGINES, MAX_ATTEMPTS, escrow_overrides

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    # One Redis database is the Celery broker of every run: under pytest-xdist
    # two runs at once would take each other's tasks (and flush them).
    pytest.mark.xdist_group("task-engines"),
]

#: Deliveries per run: 2,000 for the 4-worker runs, fewer for 1 and 2 workers
#: (the same checks, less CI time); ESCROW_WORKER_BACKLOG sets every run's.
DEFAULT_BACKLOG = {1: 600, 2: 600, 4: 2000}
EVENTS_PER_PAYMENT = 5
#: A quarter of the deliveries are duplicates (Stripe delivers at least once).
DUPLICATE_SHARE = 1 / 4


def events() -> Any:
    return swappable.load("WebhookEvent").objects


def backlog_size(workers: int) -> int:
    return int(os.environ.get("ESCROW_WORKER_BACKLOG") or DEFAULT_BACKLOG[workers])


def backlog_plan(rng: random.Random, backlog: int) -> tuple[int, list[tuple[int, int]]]:
    """How many payments, and the delivery order as (payment, event) indexes."""
    unique = round(backlog * (1 - DUPLICATE_SHARE))
    payments = max(unique // EVENTS_PER_PAYMENT, 1)
    firsts = [(p, e) for p in range(payments) for e in range(EVENTS_PER_PAYMENT)]
    order = firsts + rng.choices(firsts, k=backlog - len(firsts))
    rng.shuffle(order)
    return payments, order


def build(make_payment: Callable[..., Scene], payments: int) -> tuple[list[Scene], list[Any]]:
    scenes = [make_payment(with_charge=False) for _ in range(payments)]
    return scenes, [payment_lifecycle(scene) for scene in scenes]


class Poster:
    """Signed deliveries to the platform endpoint; times the requests."""

    def __init__(self) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.url = reverse("escrow_connect:stripe-webhook")
        self.seconds = 0.0
        self.count = 0

    def post(self, evt: dict[str, Any]) -> str:
        payload = so.encode(evt)
        header = sign_webhook_payload(payload, PLATFORM_SECRET)
        start = time.perf_counter()
        response = self.client.post(
            self.url, data=payload, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )
        self.seconds += time.perf_counter() - start
        self.count += 1
        assert response.status_code in (200, 500), response.content
        return str(response.json().get("status", ""))

    @property
    def ms_per_request(self) -> float:
        return 1000 * self.seconds / max(self.count, 1)


def retry_deferred() -> None:
    """What escrow_reconcile does for events that raced ahead of their object."""
    for _ in range(5):
        counts = pipeline.process_deferred(limit=10_000)
        if not counts or set(counts) <= {"deferred"}:
            return


def poisoned_event() -> dict[str, Any]:
    return so.event(POISON_TYPE, {"id": so.new_id("obj"), "object": "escrow_test"})


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("engine", ENGINES)
def test_workers_drain_a_shuffled_backlog_exactly_once(
    engine: str,
    workers: int,
    make_payment: Callable[..., Scene],
    worker_pool: Callable[[str, int], WorkerPool],
    settings: Any,
) -> None:
    pool = worker_pool(engine, workers)
    rng = random.Random(f"{engine}-{workers}")
    payments, order = backlog_plan(rng, backlog_size(workers))

    # The serial run: every delivery processed in its request (sync mode).
    serial_scenes, serial_events = build(make_payment, payments)
    sync = Poster()
    for p, e in order:
        sync.post(serial_events[p][e])
    retry_deferred()
    expected = sorted(map(repr, map(end_state, serial_scenes)))
    serial_ids = {evt["id"] for lifecycle in serial_events for evt in lifecycle}
    expected_statuses = Counter(
        events().filter(stripe_event_id__in=serial_ids).values_list("status", flat=True)
    )

    # The same deliveries in task mode, the poisoned event first.
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, **escrow_overrides()}
    scenes, lifecycles = build(make_payment, payments)
    poison = poisoned_event()
    queued = Poster()
    answers = Counter([queued.post(poison), queued.post(poison)])
    for p, e in order:
        answers[queued.post(lifecycles[p][e])] += 1
    # Nothing is processed in the request: each delivery is queued, or a
    # duplicate of one already queued.
    assert set(answers) <= {"queued", "duplicate"}, answers
    ids = {evt["id"] for lifecycle in lifecycles for evt in lifecycle}
    assert not events().filter(stripe_event_id__in=ids).exclude(status=E.RECEIVED).exists()
    unique_events = len(ids) + 1

    pool.start()

    def drained() -> bool:
        if events().filter(status=E.RECEIVED).exists():
            return False
        row = events().get(stripe_event_id=poison["id"])
        return row.status == E.FAILED and row.attempts >= MAX_ATTEMPTS

    seconds = wait_until(drained, pool)
    time.sleep(1)  # let any late duplicate task finish (it must find nothing to do)
    pool.stop()

    # Exactly once: each event settled by one worker, one time; the duplicates
    # and the retries of settled events found nothing to do.
    settled = pool.settled()
    per_event = Counter(event_id for event_id, _ in settled.elements())
    assert {event_id for event_id in per_event if per_event[event_id] != 1} == {poison["id"]}
    assert set(per_event) == ids | {poison["id"]}

    # The poisoned event: retried by the engine with backoff, then left failed.
    assert settled[poison["id"], "failed"] == MAX_ATTEMPTS
    row = events().get(stripe_event_id=poison["id"])
    assert (row.status, row.attempts) == (E.FAILED, MAX_ATTEMPTS)
    assert "poisoned event" in row.last_error
    if workers == 1:
        # One worker, poison first: other events were settled between its tries.
        [records] = pool.records()
        tries = [i for i, (_, event_id, _) in enumerate(records) if event_id == poison["id"]]
        assert len(tries) == MAX_ATTEMPTS
        assert tries[-1] - tries[0] > MAX_ATTEMPTS, tries

    # The end state equals the serial run's.
    retry_deferred()
    assert sorted(map(repr, map(end_state, scenes))) == expected
    statuses = Counter(events().filter(stripe_event_id__in=ids).values_list("status", flat=True))
    assert statuses == expected_statuses
    assert events().count() == 2 * len(ids) + 1

    busy = pool.busy_seconds()
    results = os.environ.get("ESCROW_WORKER_RESULTS")
    if results:
        with open(results, "a") as out:
            out.write(
                json.dumps(
                    {
                        "engine": engine,
                        "workers": workers,
                        "deliveries": queued.count,
                        "events": unique_events,
                        "drain_seconds": round(seconds, 3),
                        "busy_seconds": round(busy, 3),
                        "events_per_second": round(unique_events / busy, 1),
                        "request_ms_sync": round(sync.ms_per_request, 3),
                        "request_ms_task": round(queued.ms_per_request, 3),
                    }
                )
                + "\n"
            )
