"""Benchmarks of django-escrow-connect on PostgreSQL, in-process.

Run through ``bash scripts/bench.sh`` (starts a throwaway cluster) or, with
``DATABASE_URL`` pointing at a PostgreSQL server you may create databases on::

    PYTHONPATH=. DJANGO_SETTINGS_MODULE=tests.settings \\
        .venv/bin/python benchmarks/run.py [--sizes 1000,10000] [--events 200]

It creates a fresh database (``test_<name>``, dropped at the end), migrates it
and works on it in autocommit mode, as a web process does: no test
transaction around anything. The gateway is the simulated Stripe; its events
are collected and then delivered, signed, through the real webhook receiver.

Memory is measured in separate passes (``tracemalloc`` slows everything it
traces, so it never runs during a latency pass): the peak of Python
allocations during one operation, and the process's maximum resident set.

Results: a JSON document on stdout (or ``--output``) and a one-line summary
per measurement on stderr.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings, setup_test_environment  # noqa: E402
from django.utils.module_loading import import_string  # noqa: E402

from benchmarks.measure import emit  # noqa: E402
from django_escrow_connect import simulation as simulated  # noqa: E402
from django_escrow_connect import swappable  # noqa: E402
from django_escrow_connect.conf import (  # noqa: E402
    MANUAL_CAPTURE,
    SEPARATE_CHARGES_AND_TRANSFERS,
)
from django_escrow_connect.gateway.signing import sign_webhook_payload  # noqa: E402
from django_escrow_connect.simulation import simulated_stripe  # noqa: E402
from django_escrow_connect.webhooks.receiver import receive  # noqa: E402
from tests import factories  # noqa: E402
from tests.payments.conftest import (  # noqa: E402
    SIMULATED_GATEWAY,
    Marketplace,
    build_marketplace,
    stripe_account,
)
from tests.webhooks.conftest import SECRETS, url_for  # noqa: E402


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- measuring ----------------------------------------------------------------


class QueryCounter:
    """Counts the SQL statements run on the default connection (cheap: no SQL kept)."""

    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any):
        self.count += 1
        self.statements.append(" ".join(sql.split())[:110])
        return execute(sql, params, many, ctx)


@contextmanager
def counting() -> Iterator[QueryCounter]:
    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter


class GatewayClock:
    """Time spent inside the gateway (the simulated Stripe), to subtract it.

    Each protocol method of the configured gateway class is wrapped once;
    the figure "excluding Stripe" is the request's time minus this.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def install(self, gateway_class: type) -> None:
        from django_escrow_connect.gateway.instrumented import INSTRUMENTED_METHODS

        for name in INSTRUMENTED_METHODS:
            method = getattr(gateway_class, name, None)
            if method is None or getattr(method, "_bench_clocked", False):
                continue
            setattr(gateway_class, name, self._clocked(method))

    def _clocked(self, method: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        def clocked(*args: Any, **kwargs: Any) -> Any:
            clock.depth += 1
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                clock.depth -= 1
                if clock.depth == 0:  # nested calls are counted once
                    clock.seconds += time.perf_counter() - started

        clocked._bench_clocked = True  # type: ignore[attr-defined]
        return clocked


gateway_clock = GatewayClock()


def calls_since(mark: int) -> list[str]:
    return [name for name, _ in simulated_stripe.calls[mark:]]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def pct(p: float) -> float:
        index = min(len(ordered) - 1, max(0, round(p * (len(ordered) - 1))))
        return round(ordered[index], 3)

    return {
        "n": len(ordered),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "mean_ms": round(statistics.fmean(ordered), 3),
    }


class Sample:
    """Latency, SQL statements and gateway calls of repeated operations, by label."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.own: dict[str, list[float]] = defaultdict(list)
        self.queries: dict[str, list[int]] = defaultdict(list)
        self.calls: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        self.sql: dict[str, list[str]] = {}

    def measure(self, label: str, operation: Callable[[], Any]) -> Any:
        mark = len(simulated_stripe.calls)
        in_gateway = gateway_clock.seconds
        with counting() as counter:
            started = time.perf_counter()
            result = operation()
            elapsed = (time.perf_counter() - started) * 1000
        self.latency[label].append(elapsed)
        self.own[label].append(elapsed - (gateway_clock.seconds - in_gateway) * 1000)
        self.queries[label].append(counter.count)
        self.calls[label].append(tuple(calls_since(mark)))
        self.sql.setdefault(label, counter.statements)
        return result

    def report(self, *, with_sql: bool = False) -> dict[str, Any]:
        out = {}
        for label in self.latency:
            queries = self.queries[label]
            calls = self.calls[label]
            distinct_calls = sorted({" + ".join(c) or "-" for c in calls})
            own = summary(self.own[label])
            out[label] = {
                **summary(self.latency[label]),
                "p50_ms_excluding_stripe": own["p50_ms"],
                "p95_ms_excluding_stripe": own["p95_ms"],
                "queries_min": min(queries),
                "queries_max": max(queries),
                "gateway_calls": distinct_calls,
                "gateway_calls_max": max(len(c) for c in calls),
            }
            if with_sql:
                out[label]["sql_of_first"] = self.sql[label]
        return out


def peak_kib(operation: Callable[[], Any]) -> tuple[Any, float]:
    """The operation's result and the peak of Python allocations while it ran (KiB)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = operation()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, round((peak - before) / 1024, 1)


def memory_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_kib": ordered[(len(ordered) - 1) // 2],
        "max_kib": ordered[-1],
    }


def max_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- set-up ------------------------------------------------------------------


def collector() -> simulated.EventCollector:
    sink = simulated.EventCollector()
    simulated.set_event_sink(sink)
    return sink


def deliver_all(sink: simulated.EventCollector) -> None:
    """Deliver collected events through the receiver (not measured)."""
    deliveries = list(sink.deliveries)
    sink.clear()
    for delivery in deliveries:
        outcome = receive(delivery.endpoint, delivery.payload, delivery.signature)
        assert outcome.ok, (delivery.event["type"], outcome)


def marketplace() -> Marketplace:
    # Autocommit: on_commit callbacks run at once, so capturing is a no-op.
    return build_marketplace(capture=lambda execute=True: nullcontext())


def strategy(name: str) -> Any:
    return override_settings(
        ESCROW_CONNECT={
            **settings.ESCROW_CONNECT,
            "GATEWAY": SIMULATED_GATEWAY,
            "ESCROW_STRATEGY": name,
        }
    )


# --- 1. webhook ingest -------------------------------------------------------


def event_batch(payments: int) -> list[simulated.Delivery]:
    """Signed deliveries for ``payments`` new payments (half SCT, half manual
    capture, each to its own new connected account): the account events of
    onboarding, then the payment events of a successful card payment."""
    sink = collector()
    market = marketplace()
    deliveries: list[simulated.Delivery] = []
    for index in range(payments):
        manual = index % 2 == 1
        with strategy(MANUAL_CAPTURE if manual else SEPARATE_CHARGES_AND_TRANSFERS):
            doer = factories.make_user("doer")
            stripe_account(owner_user=doer)
            task = factories.make_task(market.customer, payee_user=doer, amount=10_000)
            response = market.create(task)
            assert response.status_code == 201, response.content
            market.pay(response.json()["payment_id"])
    deliveries.extend(sink.deliveries)
    sink.clear()
    return deliveries


def resign(delivery: simulated.Delivery) -> str:
    return sign_webhook_payload(delivery.payload, SECRETS[delivery.endpoint])


def bench_webhooks(payments: int) -> dict[str, Any]:
    log(f"webhooks: preparing {payments} payments' events (receiver) ...")
    direct = event_batch(payments)
    log(f"webhooks: preparing {payments} payments' events (HTTP view) ...")
    via_view = event_batch(payments)
    types = defaultdict(int)
    for delivery in direct:
        types[delivery.event["type"]] += 1

    new = Sample()
    statuses: dict[str, set[str]] = defaultdict(set)
    started = time.perf_counter()
    for delivery in direct:
        label = f"{delivery.endpoint}:{delivery.event['type']}"
        outcome = new.measure(label, lambda d=delivery: receive(d.endpoint, d.payload, resign(d)))
        statuses[label].add(outcome.status)
    new_elapsed = time.perf_counter() - started

    duplicate = Sample()
    started = time.perf_counter()
    for delivery in direct:
        outcome = duplicate.measure(
            "duplicate", lambda d=delivery: receive(d.endpoint, d.payload, resign(d))
        )
        assert outcome.status == "duplicate", outcome
    duplicate_elapsed = time.perf_counter() - started

    client = Client(enforce_csrf_checks=True)
    http = Sample()
    started = time.perf_counter()
    for delivery in via_view:

        def post(d: simulated.Delivery = delivery) -> Any:
            return client.post(
                url_for(d.endpoint),
                data=d.payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=resign(d),
            )

        response = http.measure("new event (HTTP view)", post)
        assert response.status_code == 200, response.content
    http_elapsed = time.perf_counter() - started

    log(f"webhooks: memory pass ({max(payments // 5, 10)} payments' events) ...")
    memory: dict[str, list[float]] = defaultdict(list)
    for delivery in event_batch(max(payments // 5, 10)):
        label = f"{delivery.endpoint}:{delivery.event['type']}"
        outcome, kib = peak_kib(lambda d=delivery: receive(d.endpoint, d.payload, resign(d)))
        assert outcome.ok, outcome
        memory[label].append(kib)

    all_new = [ms for values in new.latency.values() for ms in values]
    return {
        "memory_new_events": {
            "all": memory_summary([kib for values in memory.values() for kib in values]),
            "by_type": {label: memory_summary(v) for label, v in sorted(memory.items())},
        },
        "events_per_payment": round(len(direct) / payments, 2),
        "event_types": dict(sorted(types.items())),
        "outcomes": {label: sorted(s) for label, s in sorted(statuses.items())},
        "new_events": {
            "events": len(direct),
            "events_per_second": round(len(direct) / new_elapsed, 1),
            **summary(all_new),
            "by_type": dict(sorted(new.report(with_sql=True).items())),
        },
        "duplicates": {
            "events": len(direct),
            "events_per_second": round(len(direct) / duplicate_elapsed, 1),
            **duplicate.report(with_sql=True)["duplicate"],
        },
        "http_view_new_events": {
            "events": len(via_view),
            "events_per_second": round(len(via_view) / http_elapsed, 1),
            **http.report()["new event (HTTP view)"],
        },
    }


# --- 2. API endpoints and 3. Stripe calls per use case --------------------------


def bench_api(rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    sample = Sample()
    uses = Sample()
    sink = collector()
    market = marketplace()
    with strategy(SEPARATE_CHARGES_AND_TRANSFERS):
        for _ in range(rounds):
            task = market.task()
            response = sample.measure("POST payments/create/", lambda t=task: market.create(t))
            assert response.status_code == 201, response.content
            payment_id = response.json()["payment_id"]
            market.pay(payment_id)
            deliver_all(sink)
            response = sample.measure(
                "POST payments/confirm/<id>/",
                lambda p=payment_id: market.post(market.customer, "payment-confirm", payment_id=p),
            )
            assert response.status_code == 200, response.content
            deliver_all(sink)
            response = sample.measure(
                "GET payments/<id>/",
                lambda p=payment_id: market.get(market.customer, "payment-detail", payment_id=p),
            )
            assert response.status_code == 200
            for label, user, name in (
                ("GET payments/ (customer)", market.customer, "payment-list"),
                ("GET payments/ (doer)", market.doer, "payment-list"),
                ("GET dashboard/customer/", market.customer, "dashboard-customer"),
                ("GET dashboard/task-doer/", market.doer, "dashboard-task-doer"),
            ):
                response = sample.measure(label, lambda u=user, n=name: market.get(u, n))
                assert response.status_code == 200, response.content

        # Stripe calls per use case (events of each step delivered afterwards,
        # so the handlers' own calls are not counted here).
        for _ in range(3):
            task = market.task()
            response = uses.measure("create payment", lambda t=task: market.create(t))
            payment_id = response.json()["payment_id"]
            market.pay(payment_id)
            deliver_all(sink)
            uses.measure(
                "refund before release (partial)",
                lambda p=payment_id: market.post(
                    market.doer, "payment-refund", {"amount": 1_000}, payment_id=p
                ),
            )
            deliver_all(sink)
            uses.measure(
                "release (confirm)",
                lambda p=payment_id: market.post(market.customer, "payment-confirm", payment_id=p),
            )
            deliver_all(sink)
            response = uses.measure(
                "refund after release (partial)",
                lambda p=payment_id: market.post(
                    market.doer, "payment-refund", {"amount": 1_000}, payment_id=p
                ),
            )
            assert response.status_code == 200, response.content
            deliver_all(sink)
        for _ in range(3):
            doer = factories.make_user("newdoer")
            for label in ("onboarding link (first)", "onboarding link (again)"):
                response = uses.measure(
                    label,
                    lambda d=doer: market.post(
                        d, "stripe-onboarding-link", {"account_type": "individual"}
                    ),
                )
                assert response.status_code in (200, 201), response.content
                deliver_all(sink)
        with strategy(MANUAL_CAPTURE):
            for _ in range(3):
                task = market.task()
                response = uses.measure(
                    "create payment (manual capture)", lambda t=task: market.create(t)
                )
                payment_id = response.json()["payment_id"]
                market.pay(payment_id)
                deliver_all(sink)
                uses.measure(
                    "release (manual capture)",
                    lambda p=payment_id: market.post(
                        market.customer, "payment-confirm", payment_id=p
                    ),
                )
                deliver_all(sink)
    return sample.report(with_sql=True), uses.report()


# --- 2b. scaling of lists and dashboards -------------------------------------


PAYMENT_STATES = ["held", "released", "refunded", "awaiting_payment", "partially_refunded"]


def bulk_payments(market: Marketplace, light: Any, total: int) -> None:
    """Add payments until the table holds ``total``. One in ten is paid by the
    benchmark customer, one in ten goes to the benchmark doer (a heavy user
    each: 10% of the table); the first 20 new rows are paid by ``light`` (a typical
    user whose own rows do not grow); the rest are between 200 other users.
    Statuses rotate over held/released/refunded/awaiting/partially refunded.
    Rows (and their tasks) are bulk-created in chunks of 5,000."""
    Payment = swappable.load("EscrowPayment")
    Task = swappable.load("Task")
    User = type(market.customer)
    existing = Payment.objects.count()
    if total <= existing:
        return
    light_until = existing + max(0, 20 - Payment.objects.filter(payer=light).count())
    others = list(User.objects.filter(username__startswith="crowd")[:200])
    for index in range(len(others), 200):
        others.append(factories.make_user(f"crowd{index}"))

    def people(i: int) -> tuple[Any, Any]:
        payer, payee = others[i % 200], others[(i + 7) % 200]
        if i < light_until:
            payer = light
        elif i % 10 == 0:
            payer = market.customer
        elif i % 10 == 5:
            payee = market.doer
        return payer, payee

    for start in range(existing, total, 5_000):
        numbers = range(start, min(total, start + 5_000))
        tasks = Task.objects.bulk_create(
            [Task(title=f"bulk {i}", customer=people(i)[0]) for i in numbers]
        )
        rows = []
        for i, task in zip(numbers, tasks, strict=True):
            payer, payee = people(i)
            pid = uuid.uuid4()
            rows.append(
                Payment(
                    id=pid,
                    task=task,
                    payer=payer,
                    payee_user=payee,
                    destination_account_id="acct_bulk",
                    currency="usd",
                    amount=10_000,
                    platform_fee=1_000,
                    strategy=SEPARATE_CHARGES_AND_TRANSFERS,
                    status=PAYMENT_STATES[(i // 10) % len(PAYMENT_STATES)],
                    stripe_payment_intent_id=f"pi_bulk_{pid.hex}",
                    transfer_group=f"escrow_{pid.hex}",
                )
            )
        Payment.objects.bulk_create(rows)
    # A steady state before measuring: statistics for the planner, and the
    # visibility map set, so autovacuum does not start on the fresh rows in
    # the middle of the measurements (it made the 100,000-row figures of two
    # runs differ by a third).
    with connection.cursor() as cursor:
        for table in (Payment._meta.db_table, Task._meta.db_table):
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(table)}")


def captured_queries(operation: Callable[[], Any]) -> list[dict[str, Any]]:
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        operation()
    return list(captured.captured_queries)


def bench_scaling(market: Marketplace, sizes: list[int], rounds: int) -> dict[str, Any]:
    Payment = swappable.load("EscrowPayment")
    light = factories.make_user("light")
    endpoints = (
        ("GET payments/ (typical customer, 20 rows)", light, "payment-list", {}),
        ("GET payments/ (heavy customer)", market.customer, "payment-list", {}),
        (
            "GET payments/?role=customer (heavy customer)",
            market.customer,
            "payment-list",
            {"role": "customer"},
        ),
        ("GET payments/ (heavy doer)", market.doer, "payment-list", {}),
        (
            "GET payments/?role=task_doer (heavy doer)",
            market.doer,
            "payment-list",
            {"role": "task_doer"},
        ),
        ("GET dashboard/customer/ (heavy customer)", market.customer, "dashboard-customer", {}),
        ("GET dashboard/task-doer/ (heavy doer)", market.doer, "dashboard-task-doer", {}),
    )
    results: dict[str, Any] = {}
    plans: dict[str, Any] = {}
    sink = collector()
    for size in sizes:
        log(f"scaling: {size} payments ...")
        started = time.perf_counter()
        bulk_payments(market, light, size)
        log(f"scaling: bulk insert took {time.perf_counter() - started:.1f}s")
        sample = Sample()
        with strategy(SEPARATE_CHARGES_AND_TRANSFERS):
            for _ in range(rounds + 1):
                task = market.task()
                response = sample.measure("POST payments/create/", lambda t=task: market.create(t))
                assert response.status_code == 201, response.content
                sink.clear()
        newest = Payment.objects.filter(payer=market.customer).order_by("-created_at").first()
        for _ in range(rounds + 1):
            response = sample.measure(
                "GET payments/<id>/",
                lambda p=newest.pk: market.get(market.customer, "payment-detail", payment_id=p),
            )
            assert response.status_code == 200
        for label, user, name, params in endpoints:
            market.get(user, name, **params)  # warm
            for _ in range(rounds):
                response = sample.measure(
                    label, lambda u=user, n=name, p=params: market.get(u, n, **p)
                )
                assert response.status_code == 200
        memory = {}
        for label, user, name, params in endpoints:
            response, kib = peak_kib(lambda u=user, n=name, p=params: market.get(u, n, **p))
            assert response.status_code == 200
            memory[label] = kib
        results[str(size)] = {
            "memory_peak_kib": memory,
            "payments": Payment.objects.count(),
            "heavy_customer_payments": Payment.objects.filter(payer=market.customer).count(),
            "heavy_doer_payments": Payment.objects.filter(payee_user=market.doer).count(),
            "endpoints": sample.report(),
        }
        if size == sizes[-1]:
            for label, user, name, params in endpoints:
                queries = captured_queries(lambda u=user, n=name, p=params: market.get(u, n, **p))
                plans[label] = [
                    {
                        "sql": shorten(q["sql"]),
                        "plan": [shorten(line) for line in plan_of(q["sql"])],
                    }
                    for q in queries
                    # Every query that reads payments (in its FROM, a join or
                    # a subquery): the ones whose cost could grow with them.
                    if Payment._meta.db_table in q["sql"]
                ]
    return {"sizes": results, "explain_at": sizes[-1], "plans": plans}


def shorten(text: str, limit: int = 240) -> str:
    """SQL and plan lines without the long column lists and id arrays."""
    if text.startswith("SELECT ") and " FROM " in text:
        columns, rest = text[7:].split(" FROM ", 1)
        if len(columns) > 60:
            text = text[:7] + "... FROM " + rest
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plan_of(sql: str) -> list[str]:
    # Captured SQL has its parameters inlined (quoted by the backend): re-run as is.
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql)
        return [row[0] for row in cursor.fetchall()]


# --- main ------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import psycopg
    import rest_framework

    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            mem_kb = int(fh.readline().split()[1])
    except OSError:
        mem_kb = 0
    postgresql = {}
    with connection.cursor() as cursor:
        for name in ("server_version", "fsync", "synchronous_commit", "full_page_writes"):
            cursor.execute(f"SHOW {name}")
            postgresql[name] = cursor.fetchone()[0]
    server = postgresql["server_version"]
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "djangorestframework": rest_framework.VERSION,
        "postgresql": server,
        "postgresql_settings": postgresql,
        "psycopg": psycopg.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=150, help="payments for the webhook run")
    parser.add_argument("--rounds", type=int, default=30, help="repetitions per API endpoint")
    parser.add_argument(
        "--sizes", default="1000,10000", help="payment table sizes (add 100000 for the full run)"
    )
    parser.add_argument("--output", help="write the JSON here as well")
    parser.add_argument("--keepdb", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--skip-webhooks",
        action="store_true",
        help="leave out the in-process webhook pass (benchmarks/ingest.py measures ingest)",
    )
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("benchmarks need PostgreSQL: set DATABASE_URL (bash scripts/bench.sh does)")

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = "bench_api"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=args.keepdb)
    gateway_clock.install(import_string(SIMULATED_GATEWAY))
    simulated.reset()
    try:
        with override_settings(
            ESCROW_CONNECT={**settings.ESCROW_CONNECT, "GATEWAY": SIMULATED_GATEWAY}
        ):
            result: dict[str, Any] = {"environment": environment()}
            log(f"environment: {result['environment']}")
            if not args.skip_webhooks:
                result["webhooks"] = bench_webhooks(args.events)
            if "webhooks" in result:
                log(
                    "webhooks: new {events_per_second}/s p50 {p50_ms} ms; ".format(
                        **result["webhooks"]["new_events"]
                    )
                    + "duplicates {events_per_second}/s".format(**result["webhooks"]["duplicates"])
                )
            result["api"], result["stripe_calls"] = bench_api(args.rounds)
            simulated.reset()
            simulated.set_event_sink(simulated.EventCollector())
            market = marketplace()
            sizes = [int(s) for s in args.sizes.split(",") if s]
            result["scaling"] = bench_scaling(market, sizes, max(5, args.rounds * 2 // 3))
            result["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            result["environment"]["max_rss_mib"] = max_rss_mib()
    finally:
        simulated.set_event_sink(None)
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=args.keepdb)
    emit(result, args.output)


if __name__ == "__main__":
    main()
