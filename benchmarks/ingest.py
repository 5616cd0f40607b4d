"""Webhook ingest: the package against the floor, interleaved, on durable PostgreSQL.

Run through ``bash scripts/bench.sh`` (a throwaway cluster with fsync,
synchronous_commit and full_page_writes on) or, against a PostgreSQL server
you may create databases on::

    PYTHONPATH=. DJANGO_SETTINGS_MODULE=benchmarks.settings \\
        .venv/bin/python benchmarks/ingest.py [--events 300] [--rounds 3]

Every phase delivers the same signed payloads, through Django's test client
(URL resolution, middleware, the view), to the package's webhook view and to
the floor view (:mod:`benchmarks.floor`: verify + one ``INSERT ... ON
CONFLICT DO NOTHING``). The two sides alternate in chunks of ``--chunk``
events, the side that goes first alternating too (ABBA...), so drift in the
machine's load falls on both. A phase's figure is the ratio of the mean
request time, package / floor, per round; the report gives the median of the
rounds and their spread (min-max), then the absolute figures.

Phases, each with fresh rows per round:

- ``payment_intent.succeeded`` (new): holds a payment awaiting payment;
- ``charge.succeeded`` (new): the charge of a payment already held (the
  common order: the charge id is already known, nothing to write);
- ``account.updated`` (new): a connected account in onboarding becomes ready;
- ``duplicate``: the ``payment_intent.succeeded`` events again;
- ``payment_intent.succeeded (task mode)``: ``WEBHOOK_PROCESSING="task"``,
  the request's share only (verify + record + enqueue; the dummy tasks
  backend keeps the task and nothing runs it).

The gateway is the simulated Stripe: the run fails if any of these events
makes a Stripe call (each carries its full object).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings, setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402

from benchmarks import floor  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    Side,
    emit,
    loadavg,
    pg_settings,
    ratio_spread,
    side_medians,
)
from django_escrow_connect import simulation, swappable  # noqa: E402
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS  # noqa: E402
from django_escrow_connect.gateway.signing import sign_webhook_payload  # noqa: E402
from django_escrow_connect.simulation import simulated_stripe  # noqa: E402
from tests import factories  # noqa: E402
from tests.payments.conftest import SIMULATED_GATEWAY  # noqa: E402
from tests.webhooks import stripe_objects as so  # noqa: E402
from tests.webhooks.conftest import SECRETS, url_for  # noqa: E402

PI = "payment_intent.succeeded"
CHARGE = "charge.succeeded"
ACCOUNT = "account.updated"
DUPLICATE = "duplicate"
TASK_MODE = "payment_intent.succeeded (task mode)"
PHASES = (PI, CHARGE, ACCOUNT, DUPLICATE, TASK_MODE)
#: The package's outcome each phase must give (anything else fails the run).
EXPECTED = {PI: "processed", CHARGE: "processed", ACCOUNT: "processed", DUPLICATE: "duplicate"}
EXPECTED[TASK_MODE] = "queued"


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- the payloads --------------------------------------------------------------


class Delivery:
    """One event: where it goes on the package's side, and its body."""

    def __init__(self, endpoint: str, event: dict[str, Any]) -> None:
        self.endpoint = endpoint
        self.event_id = event["id"]
        self.body = json.dumps(event).encode()


def new_payments(count: int, customer: Any, doer: Any) -> list[Any]:
    """``count`` payments awaiting payment (bulk-created, one task each)."""
    Payment = swappable.load("EscrowPayment")
    Task = swappable.load("Task")
    tasks = Task.objects.bulk_create(
        [Task(title=f"bench {i}", customer=customer) for i in range(count)]
    )
    rows = []
    for task in tasks:
        pid = uuid.uuid4()
        rows.append(
            Payment(
                id=pid,
                task=task,
                payer=customer,
                payee_user=doer,
                destination_account_id="acct_bench",
                currency="usd",
                amount=10_000,
                platform_fee=1_000,
                strategy=SEPARATE_CHARGES_AND_TRANSFERS,
                status="awaiting_payment",
                stripe_payment_intent_id=f"pi_bench_{pid.hex}",
                transfer_group=f"escrow_{pid.hex}",
                intent_idempotency_key=f"bench:{pid}",
            )
        )
    return list(Payment.objects.bulk_create(rows))


def intent_event(payment: Any) -> dict[str, Any]:
    return so.event(
        PI,
        so.payment_intent(
            id=payment.stripe_payment_intent_id,
            amount=payment.amount,
            currency=payment.currency,
            status="succeeded",
            capture_method="automatic_async",
            latest_charge=f"ch_bench_{payment.pk.hex}",
            amount_received=payment.amount,
            metadata={"escrow_payment_id": str(payment.pk), "task_id": str(payment.task_id)},
            transfer_group=payment.transfer_group,
        ),
    )


def charge_event(payment: Any) -> dict[str, Any]:
    return so.event(
        CHARGE,
        so.charge(
            id=f"ch_bench_{payment.pk.hex}",
            payment_intent=payment.stripe_payment_intent_id,
            amount=payment.amount,
            currency=payment.currency,
            transfer_group=payment.transfer_group,
        ),
    )


def round_payloads(count: int, customer: Any, doer: Any) -> dict[str, list[Delivery]]:
    """Fresh rows and the signed-later deliveries of one round's phases."""
    payments = new_payments(count, customer, doer)
    intents = [Delivery("platform", intent_event(p)) for p in payments]
    accounts = [
        factories.make_account(owner_user=factories.make_user("bench"), ready=False)
        for _ in range(count)
    ]
    return {
        PI: intents,
        CHARGE: [Delivery("platform", charge_event(p)) for p in payments],
        ACCOUNT: [
            Delivery(
                "connect",
                so.event(ACCOUNT, so.account(a.stripe_account_id), account=a.stripe_account_id),
            )
            for a in accounts
        ],
        DUPLICATE: intents,
        TASK_MODE: [
            Delivery("platform", intent_event(p)) for p in new_payments(count, customer, doer)
        ],
    }


def payloads_for_replay(payloads: dict[str, list[Delivery]], *, warmup: bool) -> dict[str, Any]:
    """One round's new events, byte for byte, for a peer run (the duplicates are the
    ``payment_intent.succeeded`` bodies again; task mode is the package's own)."""
    return {
        "warmup": warmup,
        "phases": {
            phase: [{"endpoint": d.endpoint, "body": d.body.decode()} for d in payloads[phase]]
            for phase in (PI, CHARGE, ACCOUNT)
        },
    }


# --- measuring -----------------------------------------------------------------


def timed(side: Side, request: Callable[[], Any]) -> Any:
    """Time one request: in all, and inside the database driver's ``execute``."""
    count = 0
    in_database = 0.0

    def counter(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        nonlocal count, in_database
        count += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, ctx)
        finally:
            in_database += time.perf_counter() - started

    with connection.execute_wrapper(counter):
        started = time.perf_counter()
        result = request()
        elapsed = time.perf_counter() - started
    side.ms.append(elapsed * 1000)
    side.db_ms.append(in_database * 1000)
    side.statements.append(count)
    return result


def run_phase(
    client: Client, phase: str, deliveries: list[Delivery], chunk: int, first: int
) -> tuple[Side, Side]:
    """The package's and the floor's request times for ``deliveries``, interleaved."""
    package, bare = Side(), Side()
    floor_url = reverse("bench-floor")
    urls = {endpoint: url_for(endpoint) for endpoint in SECRETS}

    def to_package(d: Delivery) -> None:
        signature = sign_webhook_payload(d.body, SECRETS[d.endpoint])
        response = timed(
            package,
            lambda: client.post(
                urls[d.endpoint],
                data=d.body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=signature,
            ),
        )
        status = response.json().get("status")
        if response.status_code != 200 or status != EXPECTED[phase]:
            raise AssertionError(f"{phase}: {d.event_id}: {response.status_code} {status}")

    def to_floor(d: Delivery) -> None:
        signature = sign_webhook_payload(d.body, floor.FLOOR_SECRET)
        response = timed(
            bare,
            lambda: client.post(
                floor_url,
                data=d.body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=signature,
            ),
        )
        if response.status_code != 200:
            raise AssertionError(f"floor: {d.event_id}: {response.status_code}")

    calls = len(simulated_stripe.calls)
    for index, start in enumerate(range(0, len(deliveries), chunk)):
        block = deliveries[start : start + chunk]
        order = (to_package, to_floor) if (index + first) % 2 == 0 else (to_floor, to_package)
        for deliver in order:
            for d in block:
                deliver(d)
    made = simulated_stripe.calls[calls:]
    if made:
        raise AssertionError(f"{phase}: Stripe calls for events with full objects: {made[:5]}")
    return package, bare


def task_mode() -> Any:
    return override_settings(
        ESCROW_CONNECT={**settings.ESCROW_CONNECT, "WEBHOOK_PROCESSING": "task"}
    )


def phase_settings(phase: str) -> Any:
    """The settings ``phase`` runs under (task mode's own; the others as configured)."""
    return task_mode() if phase == TASK_MODE else override_settings()


@contextlib.contextmanager
def bench_database(name: str) -> Iterator[None]:
    """A database of its own (a test run on the same server keeps test_<name>),
    the simulated Stripe as the gateway; dropped afterwards."""
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    simulation.reset()
    try:
        with override_settings(
            ESCROW_CONNECT={**settings.ESCROW_CONNECT, "GATEWAY": SIMULATED_GATEWAY}
        ):
            yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def warmed_up(chunk: int) -> tuple[Client, Any, Any, dict[str, list[Delivery]]]:
    """The floor's table, the parties and a client, after a warm-up round of every
    phase (not recorded); the warm-up's payloads too (the peer replays them)."""
    floor.create_table()
    customer = factories.make_user("bench-customer")
    doer = factories.make_user("bench-doer")
    client = Client(enforce_csrf_checks=True)
    warm = round_payloads(max(chunk, 20), customer, doer)
    for phase in PHASES:
        with phase_settings(phase):
            run_phase(client, phase, warm[phase], chunk, 0)
    clear_task_backend()
    return client, customer, doer, warm


def clear_task_backend() -> None:
    try:
        from django.tasks import default_task_backend  # type: ignore[import-not-found]
    except ImportError:
        from django_tasks import default_task_backend
    default_task_backend.clear()


# --- the environment ------------------------------------------------------------


def machine() -> dict[str, Any]:
    import psycopg
    import rest_framework
    import stripe

    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                "",
            )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "django": django.get_version(),
        "djangorestframework": rest_framework.VERSION,
        "stripe": stripe.VERSION,
        "psycopg": psycopg.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


# --- the run ------------------------------------------------------------------------


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: the median ratio over rounds and its spread, and the absolute figures."""
    return {
        phase: {
            **ratio_spread([r[phase]["ratio"] for r in rounds]),
            **side_medians("package", (r[phase]["package"] for r in rounds)),
            **side_medians("floor", (r[phase]["floor"] for r in rounds)),
        }
        for phase in PHASES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=25, help="events per alternation")
    parser.add_argument("--output", help="write the JSON here as well")
    parser.add_argument(
        "--payloads-out",
        help="write every round's event bodies here (benchmarks/djstripe_ingest.py replays them)",
    )
    args = parser.parse_args()
    replay: list[dict[str, Any]] = []
    if connection.vendor != "postgresql":
        sys.exit("benchmarks need PostgreSQL: set DATABASE_URL (bash scripts/bench.sh does)")

    setup_test_environment()
    result: dict[str, Any] = {
        "benchmark": "webhook ingest, package vs floor",
        "machine": machine(),
        "load_average_before": loadavg(),
        "events_per_phase": args.events,
        "rounds": args.rounds,
        "chunk": args.chunk,
    }
    log(f"ingest: load average before {result['load_average_before']}")
    with bench_database("bench_ingest"):
        result["postgresql"] = pg_settings(connection)
        # How statements reach the server (ESCROW_PG_PREPARED=1: docs/scale.md).
        options = connection.settings_dict.get("OPTIONS", {})
        result["postgresql"]["client"] = (
            f"server-side binding, prepared on use {options['prepare_threshold']}"
            if options.get("server_side_binding") and options.get("prepare_threshold")
            else "client-side binding, no prepared statements (Django's default)"
        )
        log(f"ingest: PostgreSQL {result['postgresql']}")
        log("ingest: warm-up round (not recorded) ...")
        client, customer, doer, warm = warmed_up(args.chunk)
        replay.append(payloads_for_replay(warm, warmup=True))
        rounds = []
        for number in range(args.rounds):
            payloads = round_payloads(args.events, customer, doer)
            replay.append(payloads_for_replay(payloads, warmup=False))
            with connection.cursor() as cursor:
                cursor.execute("CHECKPOINT")
            outcome: dict[str, Any] = {}
            for phase in PHASES:
                with phase_settings(phase):
                    package, bare = run_phase(client, phase, payloads[phase], args.chunk, number)
                clear_task_backend()
                p, f = package.summary(), bare.summary()
                outcome[phase] = {
                    "package": p,
                    "floor": f,
                    "ratio": round(p["mean_ms"] / f["mean_ms"], 3),
                }
                log(
                    f"ingest: round {number + 1} {phase}: package {p['events_per_second']}/s "
                    f"({p['statements']} SQL), floor {f['events_per_second']}/s, "
                    f"ratio {outcome[phase]['ratio']}"
                )
            rounds.append(outcome)
        result["rounds_detail"] = rounds
        result["phases"] = aggregate(rounds)
        result["load_average_after"] = loadavg()
    log(f"ingest: load average after {result['load_average_after']}")
    for phase, figures in result["phases"].items():
        log(
            f"{phase:40} package/floor {figures['ratio_median']:.2f} "
            f"({figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}); "
            f"package {figures['package_events_per_second_median']}/s, "
            f"floor {figures['floor_events_per_second_median']}/s"
        )
    if args.payloads_out:
        with open(args.payloads_out, "w") as fh:
            json.dump({"chunk": args.chunk, "rounds": replay}, fh)
    emit(result, args.output)


if __name__ == "__main__":
    main()
