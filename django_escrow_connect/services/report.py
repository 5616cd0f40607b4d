"""The operations report: how escrow payments and webhooks are doing.

One function builds it (:func:`build_report`), as plain JSON-ready data; the
``escrow_report`` command prints it as text or JSON and the admin shows it
as a page ("Webhook events" -> "Escrow report").
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import swappable
from ..dates import period_setting
from ..states import (
    INCIDENTS_NEEDING_NOBODY,
    UNREADABLE_EVENT_ERROR_PREFIX,
    AccountStatus,
    MilestoneStatus,
    PaymentStatus,
    ReleaseStatus,
)
from ..states import WebhookEventStatus as E
from .common import open_disputes
from .releases import shares_owed

#: Rows listed per section (the counts are always complete).
LIST_LIMIT = 50
#: A received event not processed after this long is reported as unprocessed.
UNPROCESSED_AFTER = timedelta(minutes=15)
#: Incident kinds nobody acts on, never resolved: a declined card (the
#: customer retries). Counted in the period, never listed as still open.
NEEDS_NOBODY = INCIDENTS_NEEDING_NOBODY


def _counts(rows: Iterable[dict[str, Any]], key: str) -> dict[str, int]:
    return {str(row[key]): int(row["n"]) for row in rows}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def stuck_payment_hours() -> int:
    """``STUCK_PAYMENT_HOURS``, or a ValueError naming it (what E102 refuses)."""
    return period_setting("STUCK_PAYMENT_HOURS", "hours", "E102")


def build_report(
    *, since: datetime, until: datetime | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Everything an operator checks, for payments created in ``[since, until)``.

    Open disputes, stuck payments, unresolved events, accounts with
    requirements due and open incidents are listed whatever their age: they
    need action now. ``incidents`` counts those opened in the period,
    ``open_incidents`` those still open (unresolved) whenever opened, with
    how many are open longer than ``STUCK_PAYMENT_HOURS`` (``overdue``).
    A ``STUCK_PAYMENT_HOURS`` system check E102 refuses is a ValueError
    naming it, raised before the first query.
    """
    stuck_hours = stuck_payment_hours()
    now = now or timezone.now()
    until = until or now
    return {
        "generated_at": now.isoformat(),
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "payments": _payments(since, until),
        "transfers": _transfers(since, until),
        "open_disputes": _open_disputes(),
        "stuck_payments": _stuck_payments(now, stuck_hours),
        "webhook_events": _webhook_events(since, until, now),
        "accounts_with_requirements_due": _accounts_due(),
        "incidents": _incidents(since, until),
        "open_incidents": _open_incidents(now, stuck_hours),
    }


def _payments(since: datetime, until: datetime) -> dict[str, Any]:
    payments = swappable.load("EscrowPayment").objects.filter(
        created_at__gte=since, created_at__lt=until
    )
    by_status = _counts(payments.values("status").annotate(n=Count("pk")), "status")
    totals = payments.aggregate(
        funded=Count("pk", filter=Q(held_at__isnull=False)),
        failed=Count("pk", filter=Q(status=PaymentStatus.FAILED)),
    )
    funded, failed = int(totals["funded"]), int(totals["failed"])
    failed_attempts = (
        swappable.load("PaymentIncident")
        .objects.filter(kind="payment_failed", created_at__gte=since, created_at__lt=until)
        .count()
    )
    # What the customers were charged: a manual-capture hold captured for
    # less (amount_captured) charged only that; the rest of the
    # authorisation went back to the card and was never funded.
    volume = {
        str(row["currency"]): int(row["total"] or 0)
        for row in payments.filter(held_at__isnull=False)
        .values("currency")
        .annotate(total=Sum(Coalesce(F("amount_captured"), F("amount"))))
    }
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        # Paid into escrow at some point vs. ended failed (a retried
        # payment that then succeeded counts as funded).
        "funded": funded,
        "failed": failed,
        "success_rate": _rate(funded, funded + failed),
        "failure_rate": _rate(failed, funded + failed),
        "failed_attempts": failed_attempts,
        "funded_volume": volume,
    }


def _transfers(since: datetime, until: datetime) -> dict[str, Any]:
    transfers = swappable.load("Transfer").objects.filter(
        created_at__gte=since, created_at__lt=until
    )
    by_status = _counts(transfers.values("status").annotate(n=Count("pk")), "status")
    return {"total": sum(by_status.values()), "by_status": by_status}


def _open_disputes() -> dict[str, Any]:
    disputes = open_disputes(swappable.load("Dispute").objects).order_by(
        "evidence_due_by", "created_at"
    )
    items = [
        {
            "dispute": d.stripe_dispute_id,
            "payment": str(d.payment_id),
            # A tip's dispute (docs/tips.md): the payment itself is not disputed.
            "tip": str(d.tip_id) if d.tip_id is not None else None,
            "status": d.status,
            "amount": d.amount,
            "currency": d.currency,
            "evidence_due_by": _iso(d.evidence_due_by),
        }
        for d in disputes[:LIST_LIMIT]
    ]
    return {"count": disputes.count(), "items": items}


def _stuck_payments(now: datetime, hours: int) -> dict[str, Any]:
    cutoff = now - timedelta(hours=hours)
    # A payment released in parts waits for its next milestone as long as
    # the doer takes: stuck only when a delivered milestone is overdue for
    # its automatic release (escrow_auto_release reports a payee who cannot
    # be paid, or a release Stripe refused, without failing every run).
    overdue_milestone = (
        swappable.load("EscrowMilestone")
        .objects.filter(
            payment=OuterRef("pk"),
            status=MilestoneStatus.DELIVERED,
            auto_release_after__isnull=False,
            delivered_at__isnull=False,
        )
        .annotate(
            due_at=ExpressionWrapper(
                F("delivered_at") + F("auto_release_after"), output_field=DateTimeField()
            )
        )
        .filter(due_at__lt=cutoff)
    )
    # A release that stopped after some payees' transfers went (one refused,
    # or a hold opened between them; milestones or not) stays pending while
    # the others are owed: the payment is partially released, no longer
    # held. *Retry failed transfer* refuses it; escrow_auto_release sends the
    # rest hourly once nothing blocks it (for a payment held longer than
    # AUTO_RELEASE_AFTER_DAYS), so a release still owing after the threshold
    # waits for someone (a hold, an incident, an account, or a payment the job
    # does not finish). Stuck once the release is older than the threshold.
    owing_release = (
        swappable.load("EscrowRelease")
        .objects.filter(payment=OuterRef("pk"), status=ReleaseStatus.PENDING, created_at__lt=cutoff)
        .order_by()
    )
    Payment = swappable.load("EscrowPayment")
    stuck = Payment.objects.filter(
        Q(status=PaymentStatus.HELD, held_at__lt=cutoff)
        | Q(status=PaymentStatus.RELEASING, updated_at__lt=cutoff)
        | Q(
            Exists(overdue_milestone) | Exists(owing_release),
            status=PaymentStatus.PARTIALLY_RELEASED,
        )
        | Q(pk__in=_refunded_still_owing(Payment, owing_release, cutoff))
    ).order_by("updated_at")
    items = [
        {
            "payment": str(p.pk),
            "status": p.status,
            "amount": p.amount,
            "currency": p.currency,
            "since": _iso(p.held_at if p.status == PaymentStatus.HELD else p.updated_at),
            "connected_account": p.destination_account_id,
        }
        for p in stuck[:LIST_LIMIT]
    ]
    return {"threshold_hours": hours, "count": stuck.count(), "items": items}


def _refunded_still_owing(Payment: Any, owing_release: Any, cutoff: datetime) -> list[Any]:
    """``partially_refunded`` payments whose release stopped part-way (before
    the threshold) and still owes a payee: a refund of such a payment takes
    its part of the unpaid shares, and ``escrow_auto_release`` finishes the
    rest once nothing blocks it, so one still owing waits for someone (as a
    ``partially_released`` one). A release a refund left owing nothing is
    not stuck: nothing is to be sent. ``shares_owed`` divides refunds in
    Python (``REVERSAL_POLICY``): a query for the candidates, then, when
    there are any, its four and one for the releases' payments."""
    candidates = list(
        Payment.objects.filter(Exists(owing_release), status=PaymentStatus.PARTIALLY_REFUNDED)
        .order_by()
        .values_list("pk", flat=True)
    )
    if not candidates:
        return []
    owed = {release: shares for release, shares in shares_owed(candidates).items() if shares}
    return list(
        swappable.load("EscrowRelease")
        .objects.filter(pk__in=list(owed), status=ReleaseStatus.PENDING, created_at__lt=cutoff)
        .order_by()
        .values_list("payment_id", flat=True)
        .distinct()
    )


def _webhook_events(since: datetime, until: datetime, now: datetime) -> dict[str, Any]:
    Event = swappable.load("WebhookEvent")
    in_period = Event.objects.filter(received_at__gte=since, received_at__lt=until)
    by_status = _counts(in_period.values("status").annotate(n=Count("pk")), "status")
    unresolved = Event.objects.filter(
        Q(status__in=[E.FAILED, E.DEFERRED])
        | Q(status=E.RECEIVED, received_at__lt=now - UNPROCESSED_AFTER)
    ).order_by("received_at")
    # A failed event whose object cannot be read fails every replay alike
    # until an upgrade: listed, counted apart, never an alert again (its
    # failure sent ``webhook_processing_failed`` once).
    unreadable = Q(status=E.FAILED, last_error__startswith=UNREADABLE_EVENT_ERROR_PREFIX)
    totals = unresolved.aggregate(
        failed=Count("pk", filter=Q(status=E.FAILED) & ~unreadable),
        unreadable=Count("pk", filter=unreadable),
        deferred=Count("pk", filter=Q(status=E.DEFERRED)),
        unprocessed=Count("pk", filter=Q(status=E.RECEIVED)),
    )
    items = [
        {
            "event": e.stripe_event_id,
            "type": e.type,
            "status": e.status,
            "attempts": e.attempts,
            "received_at": _iso(e.received_at),
            "error": e.last_error[:200],
        }
        for e in unresolved[:LIST_LIMIT]
    ]
    return {
        "received": sum(by_status.values()),
        "by_status": by_status,
        "failed": int(totals["failed"]),
        "unreadable": int(totals["unreadable"]),
        "deferred": int(totals["deferred"]),
        "unprocessed": int(totals["unprocessed"]),
        "unresolved": items,
    }


def _accounts_due() -> dict[str, Any]:
    accounts = (
        swappable.load("ConnectedAccount")
        .objects.exclude(status=AccountStatus.DEAUTHORIZED)
        .exclude(stripe_account_id="")
        .filter(~Q(requirements_currently_due=[]) | ~Q(requirements_past_due=[]))
        .order_by("stripe_account_id")
    )
    items = [
        {
            "account": a.stripe_account_id,
            "status": a.status,
            "currently_due": list(a.requirements_currently_due),
            "past_due": list(a.requirements_past_due),
            "disabled_reason": a.disabled_reason,
        }
        for a in accounts[:LIST_LIMIT]
    ]
    return {"count": accounts.count(), "items": items}


def _incidents(since: datetime, until: datetime) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name in ("PaymentIncident", "TransferIncident"):
        rows = (
            swappable.load(name)
            .objects.filter(created_at__gte=since, created_at__lt=until)
            .values("kind")
            .annotate(n=Count("pk"))
        )
        for kind, n in _counts(rows, "kind").items():
            result[kind] = result.get(kind, 0) + n
    return {"by_kind": result}


def _open_incidents(now: datetime, hours: int) -> dict[str, Any]:
    """Unresolved incidents whatever their age, oldest first (not those
    :data:`NEEDS_NOBODY`): an incident opened before the period and never
    handled (a failed transfer, money held by a hold) left the period's
    counts, and the report, while it still needed someone. ``overdue``:
    open longer than ``hours`` (``STUCK_PAYMENT_HOURS``), information only
    (:func:`needs_attention`). Four queries."""
    cutoff = now - timedelta(hours=hours)
    by_kind: dict[str, int] = {}
    overdue = 0
    rows: list[tuple[datetime, dict[str, Any]]] = []
    for name, label in (("PaymentIncident", "payment"), ("TransferIncident", "transfer")):
        model = swappable.load(name)
        still_open = model.objects.filter(resolved_at__isnull=True).exclude(
            kind__in=list(NEEDS_NOBODY)
        )
        counts = (
            still_open.order_by()
            .values("kind")
            .annotate(n=Count("pk"), late=Count("pk", filter=Q(created_at__lt=cutoff)))
        )
        for row in counts:
            by_kind[str(row["kind"])] = by_kind.get(str(row["kind"]), 0) + int(row["n"])
            overdue += int(row["late"])
        for incident in still_open.order_by("created_at", "pk")[:LIST_LIMIT]:
            rows.append(
                (
                    incident.created_at,
                    {
                        "incident": f"{label} incident {incident.pk}",
                        "kind": incident.kind,
                        "payment": str(incident.payment_id),
                        "code": incident.code,
                        "opened_at": _iso(incident.created_at),
                        "amount": getattr(incident, "amount", None),
                        "currency": getattr(incident, "currency", "") or None,
                    },
                )
            )
    rows.sort(key=lambda row: row[0])
    return {
        "threshold_hours": hours,
        "count": sum(by_kind.values()),
        "overdue": overdue,
        "by_kind": dict(sorted(by_kind.items())),
        "items": [item for _opened, item in rows[:LIST_LIMIT]],
    }


# --------------------------------------------------------------------------
# Text rendering (the command's default format)
# --------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


def _kv(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(values.items())) or "none"


def render_text(report: dict[str, Any]) -> str:
    p, t, ev = report["payments"], report["transfers"], report["webhook_events"]
    disputes, stuck = report["open_disputes"], report["stuck_payments"]
    accounts, incidents = report["accounts_with_requirements_due"], report["open_incidents"]
    lines = [
        f"Escrow report {report['period']['since']} .. {report['period']['until']}",
        "",
        f"Payments: {p['total']} ({_kv(p['by_status'])})",
        f"  funded {p['funded']}, failed {p['failed']}: success rate {_pct(p['success_rate'])}, "
        f"failure rate {_pct(p['failure_rate'])}; failed attempts {p['failed_attempts']}",
        f"  funded volume: {_kv(p['funded_volume'])}",
        f"Transfers: {t['total']} ({_kv(t['by_status'])})",
        f"Incidents opened in the period: {_kv(report['incidents']['by_kind'])}",
        "",
        f"Open disputes: {disputes['count']}",
        *(
            f"  {d['dispute']} payment {d['payment']}"
            + (f" tip {d['tip']}" if d["tip"] else "")
            + f" {d['status']} {d['amount']} "
            f"{d['currency']} evidence due {d['evidence_due_by'] or '-'}"
            for d in disputes["items"]
        ),
        f"Stuck payments (held/releasing > {stuck['threshold_hours']} h): {stuck['count']}",
        *(
            f"  {s['payment']} {s['status']} since {s['since']} ({s['amount']} {s['currency']})"
            for s in stuck["items"]
        ),
        f"Webhook events received: {ev['received']} ({_kv(ev['by_status'])})",
        f"  failed {ev['failed']}, deferred {ev['deferred']}, unprocessed {ev['unprocessed']}"
        + (f", unreadable {ev['unreadable']}" if ev["unreadable"] else ""),
        *(
            f"  {e['event']} {e['type']} {e['status']} x{e['attempts']}: {e['error']}"
            for e in ev["unresolved"]
        ),
        f"Accounts with requirements due: {accounts['count']}",
        *(
            f"  {a['account']} {a['status']}: {', '.join(a['past_due'] or a['currently_due'])}"
            for a in accounts["items"]
        ),
        f"Incidents still open (any age): {incidents['count']} ({_kv(incidents['by_kind'])}); "
        f"open longer than {incidents['threshold_hours']} h: {incidents['overdue']}",
        *(
            f"  {i['incident']} {i['kind']} payment {i['payment']} opened {i['opened_at']}"
            + (f" ({i['code']})" if i["code"] else "")
            + (f" {i['amount']} {i['currency']}" if i["amount"] is not None else "")
            for i in incidents["items"]
        ),
    ]
    return "\n".join(lines)


def needs_attention(report: dict[str, Any]) -> bool:
    """Whether anything in the report asks for an operator.

    Open incidents are listed, never an alert by themselves: some are never
    resolved although handled (an early fraud warning on a released payment
    staff decided not to refund: *Resolve* refuses an open Radar hold), so
    ``--check`` would fail for ever. What such an incident blocks alerts
    already: a payment it keeps held is a stuck payment.
    """
    ev = report["webhook_events"]
    return bool(
        ev["failed"]
        or ev["unprocessed"]
        or report["stuck_payments"]["count"]
        or report["open_disputes"]["count"]
    )
