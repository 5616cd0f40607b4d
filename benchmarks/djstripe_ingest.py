"""Webhook ingest, peer column: dj-stripe 2.11 against the floor, on the same payloads.

Runs in a venv of its own (dj-stripe 2.11 needs stripe<16; the package needs
16), so it imports neither the package nor the test host. ``bash scripts/bench.sh
djstripe`` builds that venv, runs :mod:`benchmarks.ingest` with
``--payloads-out`` and then this file on those payloads::

    DATABASE_URL=postgres://... DJSTRIPE_VENV/bin/python benchmarks/djstripe_ingest.py \\
        --payloads PAYLOADS.json [--output djstripe-latest.json]

Each round replays, byte for byte, the events :mod:`benchmarks.ingest` sent to
the package in that round, signed afresh, through Django's test client to
dj-stripe's webhook view (``djstripe/webhook/<uuid>/``: a ``WebhookEndpoint``
row per endpoint, platform and Connect, each with its signing secret) and to
the same floor view (:mod:`benchmarks.floor`) in this process, alternating in
chunks the same way (ABBA...), so dj-stripe / floor is a ratio from one run.

Phases: ``payment_intent.succeeded`` (new), ``charge.succeeded`` (new),
``account.updated`` (new: a Connect event), ``duplicate`` (the
``payment_intent.succeeded`` events again). dj-stripe re-retrieves the objects
from Stripe; those requests go to :mod:`benchmarks.djstripe_stub` on 127.0.0.1,
which answers from the payloads (counted per event: ``stripe_fetches``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.request import urlopen

HERE = Path(__file__).resolve().parent
# Run as a script by dj-stripe's venv: the project root makes ``benchmarks`` importable.
sys.path.insert(0, str(HERE.parent))

from benchmarks.measure import (  # noqa: E402
    Side,
    emit,
    loadavg,
    pg_settings,
    ratio_spread,
    side_medians,
)

PI = "payment_intent.succeeded"
CHARGE = "charge.succeeded"
ACCOUNT = "account.updated"
DUPLICATE = "duplicate"
PHASES = (PI, CHARGE, ACCOUNT, DUPLICATE)
#: dj-stripe's endpoints: the platform's and the Connect one (separate secrets, as
#: Stripe signs each endpoint's deliveries with its own).
SECRETS = {"platform": "whsec_bench_djstripe_platform", "connect": "whsec_bench_djstripe_connect"}


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def sign(body: str, secret: str) -> str:
    """A ``Stripe-Signature`` header for ``body``, as Stripe computes it (v1, now)."""
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# --- the stub Stripe ------------------------------------------------------------


class Stub:
    """:mod:`benchmarks.djstripe_stub` in a process of its own, on 127.0.0.1."""

    def __init__(self, payloads_path: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, str(HERE / "djstripe_stub.py"), payloads_path],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "port":
            self.stop()
            raise RuntimeError(f"the Stripe stub did not start: {line}")
        self.base = f"http://127.0.0.1:{line[1]}"

    def stats(self) -> dict[str, Any]:
        with urlopen(f"{self.base}/__stats") as response:  # noqa: S310
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- measuring -----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", required=True, help="benchmarks/ingest.py --payloads-out")
    parser.add_argument("--output", help="write the JSON here as well")
    args = parser.parse_args()
    with open(args.payloads) as fh:
        payloads = json.load(fh)
    chunk = payloads["chunk"]

    stub = Stub(args.payloads)
    try:
        os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.djstripe_settings"
        os.environ["DJSTRIPE_BENCH_API_HOST"] = stub.base
        result = run(payloads, chunk, stub)
    finally:
        stub.stop()
    for phase, figures in result["phases"].items():
        log(
            f"{phase:28} dj-stripe/floor {figures['ratio_median']:.2f} "
            f"({figures['ratio_min']:.2f}-{figures['ratio_max']:.2f}); "
            f"dj-stripe {figures['djstripe_events_per_second_median']}/s, "
            f"floor {figures['floor_events_per_second_median']}/s, "
            f"excluding fetches {figures['ratio_excluding_fetches_median']:.2f}, "
            f"{figures['djstripe_statements_mean']} SQL, "
            f"{figures['stripe_fetches_per_event']} Stripe fetches per event"
        )
    emit(result, args.output)


def run(payloads: dict[str, Any], chunk: int, stub: Stub) -> dict[str, Any]:
    import django

    django.setup()
    import stripe
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse
    from djstripe.apps import __version__ as djstripe_version
    from djstripe.models import Event, WebhookEndpoint
    from stripe import _http_client

    from benchmarks import floor

    # Time spent in Stripe round trips (to the stub), so the figures can also be
    # read without them; dj-stripe's calls themselves are not changed.
    in_fetches = [0.0]
    request_with_retries = _http_client.HTTPClient.request_with_retries

    def timed_fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return request_with_retries(self, *args, **kwargs)
        finally:
            in_fetches[0] += time.perf_counter() - started

    _http_client.HTTPClient.request_with_retries = timed_fetch  # type: ignore[method-assign]

    if connection.vendor != "postgresql":
        sys.exit("benchmarks need PostgreSQL: set DATABASE_URL (bash scripts/bench.sh does)")

    def timed(side: Side, request: Callable[[], Any]) -> Any:
        count = 0

        def counter(
            execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any
        ) -> Any:
            nonlocal count
            count += 1
            return execute(sql, params, many, ctx)

        fetching = in_fetches[0]
        with connection.execute_wrapper(counter):
            started = time.perf_counter()
            response = request()
            elapsed = time.perf_counter() - started
        side.ms.append(elapsed * 1000)
        side.fetch_ms.append((in_fetches[0] - fetching) * 1000)
        side.statements.append(count)
        return response

    def run_phase(
        client: Client, phase: str, deliveries: list[dict[str, str]], first: int
    ) -> tuple[Side, Side, int]:
        peer, bare = Side(), Side()
        floor_url = reverse("bench-floor")
        fetched = sum(stub.stats()["served"].values())

        def to_peer(d: dict[str, str]) -> None:
            signature = sign(d["body"], SECRETS[d["endpoint"]])
            response = timed(
                peer,
                lambda: client.post(
                    urls[d["endpoint"]],
                    data=d["body"],
                    content_type="application/json",
                    HTTP_STRIPE_SIGNATURE=signature,
                ),
            )
            if response.status_code != 200:
                raise AssertionError(f"dj-stripe: {phase}: {response.status_code}")

        def to_floor(d: dict[str, str]) -> None:
            signature = sign(d["body"], floor.FLOOR_SECRET)
            response = timed(
                bare,
                lambda: client.post(
                    floor_url,
                    data=d["body"],
                    content_type="application/json",
                    HTTP_STRIPE_SIGNATURE=signature,
                ),
            )
            if response.status_code != 200:
                raise AssertionError(f"floor: {phase}: {response.status_code}")

        for index, start in enumerate(range(0, len(deliveries), chunk)):
            block = deliveries[start : start + chunk]
            order = (to_peer, to_floor) if (index + first) % 2 == 0 else (to_floor, to_peer)
            for deliver in order:
                for d in block:
                    deliver(d)
        stats = stub.stats()
        if stats["misses"]:
            raise AssertionError(f"{phase}: the Stripe stub could not answer {stats['misses'][:5]}")
        return peer, bare, sum(stats["served"].values()) - fetched

    setup_test_environment()
    result: dict[str, Any] = {
        "benchmark": "webhook ingest, dj-stripe vs floor",
        "peer": f"dj-stripe {djstripe_version}",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "django": django.get_version(),
            "dj-stripe": djstripe_version,
            "stripe": stripe.VERSION,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "load_average_before": loadavg(),
        "chunk": chunk,
        "stubbed": (
            "dj-stripe's Stripe API requests (STRIPE_API_HOST) go to benchmarks/djstripe_stub.py "
            "on 127.0.0.1, answering from the replayed events' own objects"
        ),
    }
    log(f"djstripe: load average before {result['load_average_before']}")
    old_name = connection.settings_dict["NAME"]
    connection.settings_dict.setdefault("TEST", {})["NAME"] = "bench_djstripe"
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        result["postgresql"] = pg_settings(connection)
        floor.create_table()
        endpoints = {
            name: WebhookEndpoint.objects.create(
                id=f"we_bench_{name}",
                livemode=False,
                api_version=Event._meta.get_field("api_version").default or "",
                enabled_events=["*"],
                secret=secret,
                status="enabled",
                url=f"https://bench.invalid/djstripe/{name}/",
                stripe_data={},
            )
            for name, secret in SECRETS.items()
        }
        urls = {
            name: reverse("djstripe:djstripe_webhook_by_uuid", args=[e.djstripe_uuid])
            for name, e in endpoints.items()
        }
        client = Client(enforce_csrf_checks=True)
        rounds = []
        for number, round_ in enumerate(payloads["rounds"]):
            phases = {**round_["phases"], DUPLICATE: round_["phases"][PI]}
            warmup = round_["warmup"]
            label = "warm-up round (not recorded)" if warmup else f"round {len(rounds) + 1}"
            log(f"djstripe: {label} ...")
            if not warmup:
                with connection.cursor() as cursor:
                    cursor.execute("CHECKPOINT")
            outcome: dict[str, Any] = {}
            for phase in PHASES:
                peer, bare, fetches = run_phase(client, phase, phases[phase], number)
                if warmup:
                    continue
                p, f = peer.summary(), bare.summary()
                outcome[phase] = {
                    "djstripe": p,
                    "floor": f,
                    "ratio": round(p["mean_ms"] / f["mean_ms"], 3),
                    "ratio_excluding_fetches": round(
                        (p["mean_ms"] - p["fetch_ms_mean"]) / f["mean_ms"], 3
                    ),
                    "stripe_fetches_per_event": round(fetches / p["n"], 2),
                }
                log(
                    f"djstripe: {label} {phase}: dj-stripe {p['events_per_second']}/s "
                    f"({p['statements']} SQL, {fetches} fetches), "
                    f"floor {f['events_per_second']}/s, ratio {outcome[phase]['ratio']}"
                )
            if not warmup:
                rounds.append(outcome)
        result["events_per_phase"] = len(payloads["rounds"][-1]["phases"][PI])
        result["rounds"] = len(rounds)
        result["rounds_detail"] = rounds
        result["phases"] = aggregate(rounds)
        result["stripe_requests"] = stub.stats()["served"]
        result["load_average_after"] = loadavg()
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    log(f"djstripe: load average after {result['load_average_after']}")
    return result


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: the median ratio over rounds and its spread, and the absolute figures."""
    out = {}
    for phase in PHASES:
        peer = [r[phase]["djstripe"] for r in rounds]
        out[phase] = {
            **ratio_spread([r[phase]["ratio"] for r in rounds]),
            "ratio_excluding_fetches_median": round(
                statistics.median(r[phase]["ratio_excluding_fetches"] for r in rounds), 2
            ),
            "djstripe_fetch_ms_mean_median": statistics.median(p["fetch_ms_mean"] for p in peer),
            **side_medians("djstripe", peer),
            "djstripe_statements_mean": round(
                statistics.fmean(p["statements_mean"] for p in peer), 2
            ),
            **side_medians("floor", (r[phase]["floor"] for r in rounds)),
            "stripe_fetches_per_event": max(r[phase]["stripe_fetches_per_event"] for r in rounds),
        }
    return out


if __name__ == "__main__":
    main()
