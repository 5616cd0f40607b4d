"""The scheduled jobs that move money, killed (SIGKILL) in their money call.

``escrow_auto_release`` and ``escrow_capture_expiry`` run as real processes
(:mod:`.jobs`) on the test database and the shared simulated Stripe. The
job dies in a gateway call before Stripe acted (Stripe never heard of it)
or after (the answer is lost); then, in each order: the job runs again
(``J``), Stripe's queued webhooks arrive at the server (``W``),
``escrow_reconcile`` runs (``C``), the customer confirms over HTTP (``K``).

After each case: no 5xx; Stripe's books hold and the app's rows agree
(:func:`~.harness.assert_books_clean`: one transfer per payee and release
at most, ``escrow_audit`` clean); the payment ends where the case says,
every payee paid exactly once when it ends released; no incident left open;
every run after the crash exits 0 with no traceback, and the run that
finished the payment says so on its line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from django_escrow_connect import swappable
from django_escrow_connect.services.releases import transfers_owed
from tests.payments.conftest import age, configure

from .cases import CRASH_POINTS, MANUAL, SCT, held_in_parts, refused_share
from .harness import World, check_case
from .jobs import JobRun, Jobs

pytestmark = pytest.mark.django_db(transaction=True)

#: Days a held payment waits for escrow_auto_release (the job's setting).
AUTO_RELEASE_DAYS = 14


@dataclass(frozen=True)
class JobCase:
    """A job's run that makes one money call, killed in it."""

    name: str
    #: the command and its arguments
    command: tuple[str, ...]
    #: the gateway method the job dies in
    method: str
    strategy: str
    #: "held" (one payee), "held-split" (60/40), "stopped-split" (60/40, the
    #: partner paid by the customer's confirm, the doer's transfer refused,
    #: its incident resolved by staff), "stopped-split-refunded" (the same,
    #: then refunded 1,000 by staff), "manual-hold" (authorised, lapsing
    #: within the hour), "releasing" (one payee: escrow_auto_release was
    #: killed before Stripe made its transfer, which is left in flight)
    start: str
    #: where the payment ends once the job (or reconcile) finished the call
    done: str
    #: Stripe's transfers of the payment once it is released (one per payee)
    transfers: tuple[int, ...] = ()
    #: calls of ``method`` that go through before the one the job dies in
    skip: int = 0
    #: statuses a confirm (``K``) before the job's next run may leave
    after_confirm: frozenset[str] = frozenset({"released"})
    #: statuses of a payment the command picks up: a run that finds the
    #: payment in one of them finishes it (says ``<status> -> <done>``); in
    #: any other, it leaves the payment alone (a release in flight,
    #: ``releasing``, is escrow_reconcile's or the customer's to finish)
    picks_up: frozenset[str] = frozenset({"held", "partially_released"})
    #: a payment the command picks up must also still owe a payee a transfer
    #: (a state the finished payment keeps: ``partially_refunded``)
    picks_up_owing: bool = False


AUTO_RELEASE = ("escrow_auto_release",)
JOB_CASES = [
    JobCase(
        "auto-release", AUTO_RELEASE, "create_transfer", SCT, "held", "released", (9_000,),
    ),
    # Split 60/40 (10 % fee): 5,400 to the doer, then 3,600 to the partner.
    JobCase(
        "auto-release-split-first-payee", AUTO_RELEASE, "create_transfer", SCT, "held-split",
        "released", (3_600, 5_400),
    ),
    JobCase(
        "auto-release-split-second-payee", AUTO_RELEASE, "create_transfer", SCT, "held-split",
        "released", (3_600, 5_400), skip=1,
    ),
    # The job finishing a release stopped part-way: only the doer's 5,400 is owed.
    JobCase(
        "auto-release-finish-stopped-split", AUTO_RELEASE, "create_transfer", SCT,
        "stopped-split", "released", (3_600, 5_400),
    ),
    # The same, refunded 1,000 by staff since (partially_refunded): 900 net
    # back 60/40, the partner (paid) reversing 360, the doer (unpaid) bearing
    # 540: 4,860 is owed, and the payment stays partially_refunded.
    JobCase(
        "auto-release-finish-stopped-split-refunded", AUTO_RELEASE, "create_transfer", SCT,
        "stopped-split-refunded", "partially_refunded", (3_600, 4_860),
        after_confirm=frozenset({"partially_refunded"}),
        picks_up=frozenset({"partially_refunded"}), picks_up_owing=True,
    ),
    JobCase(
        "capture-expiry-release", ("escrow_capture_expiry", "--action", "release"),
        "capture_payment_intent", MANUAL, "manual-hold", "released",
    ),
    # The customer's confirm before the job's next run captures a hold whose
    # void Stripe never heard of (killed before): released; one Stripe voided
    # is canceled, and the confirm is refused.
    JobCase(
        "capture-expiry-cancel", ("escrow_capture_expiry", "--action", "cancel"),
        "cancel_payment_intent", MANUAL, "manual-hold", "canceled",
        after_confirm=frozenset({"released", "canceled"}),
    ),
    # escrow_reconcile (every 10 minutes) finishing the transfer a killed
    # escrow_auto_release left in flight, itself killed in that transfer; J
    # runs it again (a process), C runs it in the test process.
    JobCase(
        "reconcile-finishing-auto-release", ("escrow_reconcile", "--older-than", "0"),
        "create_transfer", SCT, "releasing", "released", (9_000,),
        picks_up=frozenset({"releasing"}),
    ),
]  # fmt: skip
BY_NAME = {case.name: case for case in JOB_CASES}

#: Follow-up orders: J the job runs again, W webhooks arrive, C escrow_reconcile
#: runs, K the customer confirms. Webhooks not delivered by a W never arrive.
JOB_ORDERS: dict[str, tuple[str, ...]] = {
    "job-reconcile": ("J", "C"),
    "webhook-job-reconcile": ("W", "J", "C"),
    "job-confirm": ("J", "K"),
    "confirm-job": ("K", "J"),
}


@pytest.fixture
def jobs(servers: Any, crash_dir: Any) -> Jobs:
    env = servers.env(connections["default"].settings_dict["NAME"])
    return Jobs(env, crash_dir, {"AUTO_RELEASE_AFTER_DAYS": AUTO_RELEASE_DAYS})


def set_up(world: World, jobs: Jobs, case: JobCase) -> Any:
    configure(settings, GATEWAY="tests.crash.gateway.CrashGateway", ESCROW_STRATEGY=case.strategy)
    long_ago = timezone.now() - timedelta(days=AUTO_RELEASE_DAYS + 1)
    if case.start == "held":
        payment = world.held_payment()
    elif case.start == "held-split":
        payment = held_in_parts(world, "held-split")
    elif case.start in ("stopped-split", "stopped-split-refunded"):
        from tests.reliability.test_charge_disputed_hold import resolve_in_the_admin

        payment = refused_share(world)
        incidents = swappable.load("TransferIncident").objects.filter(
            payment=payment, resolved_at__isnull=True
        )
        assert len(incidents) == 1, list(incidents)
        # Staff checked the doer's account: the next run sends its share.
        resolve_in_the_admin(world.market, incidents[0])
        if case.start == "stopped-split-refunded":
            answer = world.api(world.market.staff, "payment-refund", payment.pk, {"amount": 1_000})
            assert answer.status == 200, answer
            world.deliver_in_process()
            payment = world.payment(payment.pk)
            assert payment.status == "partially_refunded", payment.status
    elif case.start == "releasing":
        payment = world.held_payment()
        age(payment, held_at=long_ago)
        jobs.crash(world, "create_transfer", "before", *AUTO_RELEASE)
        payment = world.payment(payment.pk)
        assert payment.status == "releasing", payment.status
    else:
        assert case.start == "manual-hold", case.start
        payment = world.held_payment()
        age(payment, capture_before=timezone.now() + timedelta(hours=1))
    age(payment, held_at=long_ago)
    return world.payment(payment.pk)


def run_job_case(world: World, jobs: Jobs, case: JobCase, crash: str, order: str) -> None:
    payment = set_up(world, jobs, case)
    world.steps.append(f"case: {case.name}, job dies {crash} Stripe acts, then {order}")
    jobs.crash(world, case.method, crash, *case.command, skip=case.skip)
    world.steps.append(f"after the crash: {world.payment(payment.pk).status}")
    runs: list[tuple[str, JobRun]] = []
    #: escrow_reconcile in the test process: (status before, its output, status after)
    reconciles: list[tuple[str, str, str]] = []
    confirms = []
    for step in JOB_ORDERS[order]:
        if step == "J":
            before = world.payment(payment.pk).status
            if case.picks_up_owing and not transfers_owed(payment.pk):
                before = f"{before}, nothing owed"  # finished: not picked up
            runs.append((before, jobs.run(world, *case.command)))
        elif step == "W":
            world.deliver()
        elif step == "C":
            before = world.payment(payment.pk).status
            reconciles.append((before, world.reconcile(), world.payment(payment.pk).status))
        elif step == "K":
            answer = world.http(world.market.customer, "payment-confirm", payment.pk)
            world.steps.append(f"the customer confirmed: {answer}")
            confirms.append(answer)
        else:  # pragma: no cover
            raise ValueError(step)
    steps = JOB_ORDERS[order]
    confirmed_first = steps.index("K") < steps.index("J") if "K" in steps else False

    def status_as_expected() -> None:
        status = world.payment(payment.pk).status
        expected = case.after_confirm if confirmed_first else frozenset({case.done})
        assert status in expected, f"status {status}, expected one of {sorted(expected)}"

    def paid_once() -> None:
        current = world.payment(payment.pk)
        if case.strategy != SCT or current.status != case.done:
            return
        with world.shared.session() as store:
            made = sorted(
                t["amount"]
                for t in store.transfers.values()
                if t.get("transfer_group") == current.transfer_group
            )
        assert made == sorted(case.transfers), f"Stripe transferred {made}, owed {case.transfers}"

    def no_incident_open() -> None:
        for name in ("TransferIncident", "PaymentIncident"):
            left = swappable.load(name).objects.filter(payment=payment, resolved_at__isnull=True)
            assert not left.exists(), f"{name} left open: {[(i.kind, i.code) for i in left]}"

    def runs_make_sense() -> None:
        for before, run in runs:
            assert run.returncode == 0, f"the job after the crash: {run}"
            assert "Traceback" not in run.stdout, run
            if before in case.picks_up:
                # This run found the payment unfinished and finished it.
                verb = f"{payment.pk}: {before} -> {case.done}"
                assert any(verb in line for line in run.lines), f"no line {verb!r}: {run}"
            else:
                assert str(payment.pk) not in run.stdout, f"the run touched it again: {run}"
        for before, text, after in reconciles:
            # World.reconcile keeps a failed run's CommandError in its text.
            assert "CommandError" not in text, text
            assert "Traceback" not in text, text
            if after != before:
                # It finished the payment's call: its line says so.
                assert str(payment.pk) in text, f"{before} -> {after}, not said: {text!r}"

    def confirms_answered() -> None:
        for answer in confirms:
            assert answer.status in (200, 409), f"the confirm: {answer}"

    check_case(
        world,
        payment,
        status_as_expected,
        paid_once,
        no_incident_open,
        runs_make_sense,
        confirms_answered,
    )


@pytest.mark.parametrize("order", list(JOB_ORDERS))
@pytest.mark.parametrize("crash", list(CRASH_POINTS))
@pytest.mark.parametrize("case", [case.name for case in JOB_CASES])
def test_job_crash(world, jobs, case, crash, order):
    run_job_case(world, jobs, BY_NAME[case], crash, order)
