"""Traces and metrics: optional OpenTelemetry spans, counters a host can export.

The structured log records stay the audit trail; this module adds what a
dashboard and an alert need:

- :func:`span`: an OpenTelemetry span when ``opentelemetry-api`` is installed
  (``pip install django-escrow-connect[otel]``) and
  ``ESCROW_CONNECT["OPENTELEMETRY"]`` is true (the default), else a no-op
  that allocates nothing. The package opens ``stripe.<method>`` around each
  gateway call, ``escrow_connect.webhook`` around each event's processing and
  ``escrow_connect.money_operation`` around each money call.
- Counters (``escrow_connect.webhook.events``, ``escrow_connect.stripe.requests``,
  ``escrow_connect.stripe.errors``) and observable gauges
  (``escrow_connect.incidents.open``, ``escrow_connect.payments.held``,
  ``escrow_connect.payments.held.oldest_age_seconds``,
  ``escrow_connect.payments.held.capture_deadline_seconds``,
  ``escrow_connect.money_operations.unresolved``) through the OpenTelemetry
  metrics API, exported by whatever ``MeterProvider`` the host configures.
- :func:`metrics_snapshot`: the same numbers as a dict without OpenTelemetry
  (``manage.py escrow_metrics`` prints it as JSON or Prometheus text).

Span attributes are only ``str``, ``int`` and ``bool`` values under names that
cannot carry a secret: never an API key, a client secret, card data or a
payload (:func:`safe_attributes` drops anything else). See
``docs/observability.md`` for the names and for what to alert on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from . import __version__, swappable, transitions
from .conf import escrow_settings
from .holdings import held_counted, holding
from .states import INCIDENTS_NEEDING_NOBODY, UNRESOLVED_OPERATION_STATES

__all__ = [
    "INSTRUMENTATION_NAME",
    "metrics_snapshot",
    "record_stripe_error",
    "record_stripe_request",
    "record_webhook_event",
    "render_prometheus",
    "reset_counters",
    "safe_attributes",
    "span",
    "tracing_enabled",
]

logger = logging.getLogger("django_escrow_connect.observability")

#: The tracer and meter name (the OpenTelemetry instrumentation scope).
INSTRUMENTATION_NAME = "django_escrow_connect"

# Attribute names that could carry a secret, card data or a payload: dropped
# whatever their value. Values that look like keys or client secrets are
# dropped too (defence in depth: a caller passing the wrong variable).
_FORBIDDEN_NAME = re.compile(r"secret|password|token|card|payload|api_key|authorization", re.I)
_SECRET_VALUE = re.compile(r"^(sk|rk|pk|whsec)_|_secret_")
#: The longest string attribute kept: ids and codes are short, texts are not.
MAX_ATTRIBUTE_CHARS = 256


def safe_attributes(attributes: Mapping[str, Any]) -> dict[str, str | int | bool]:
    """The attributes a span may carry: ``str``/``int``/``bool``, nothing secret.

    ``None`` and any other type (dicts, objects: possibly a whole payload) are
    dropped, not stringified.
    """
    safe: dict[str, str | int | bool] = {}
    for name, value in attributes.items():
        if _FORBIDDEN_NAME.search(name):
            continue
        if isinstance(value, str):
            if len(value) > MAX_ATTRIBUTE_CHARS or _SECRET_VALUE.search(value):
                continue
            safe[name] = value
        elif isinstance(value, (bool, int)):
            safe[name] = value
    return safe


# --------------------------------------------------------------------------
# OpenTelemetry, when installed and wanted
# --------------------------------------------------------------------------


class _Instruments:
    """The tracer and the metric instruments, created once per process."""

    def __init__(self, trace: Any, metrics: Any) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__)
        self.webhook_events = meter.create_counter(
            "escrow_connect.webhook.events",
            unit="{event}",
            description="Webhook deliveries and event processings, by event type and outcome.",
        )
        self.stripe_requests = meter.create_counter(
            "escrow_connect.stripe.requests",
            unit="{request}",
            description="Calls to the payment gateway, by method.",
        )
        self.stripe_errors = meter.create_counter(
            "escrow_connect.stripe.errors",
            unit="{error}",
            description="Gateway calls that raised GatewayError, by method, code and HTTP status.",
        )
        meter.create_observable_gauge(
            "escrow_connect.incidents.open",
            callbacks=[_observe(metrics, _incident_observations)],
            unit="{incident}",
            description="Unresolved payment and transfer incidents that need a person, by kind.",
        )
        meter.create_observable_gauge(
            "escrow_connect.payments.held",
            callbacks=[_observe(metrics, _held_observations)],
            unit="{payment}",
            description="Payments held in escrow, by currency.",
        )
        meter.create_observable_gauge(
            "escrow_connect.payments.held.oldest_age_seconds",
            callbacks=[_observe(metrics, _held_age_observations)],
            unit="s",
            description="Age of the oldest held payment, by currency.",
        )
        meter.create_observable_gauge(
            "escrow_connect.payments.held.capture_deadline_seconds",
            callbacks=[_observe(metrics, _capture_deadline_observations)],
            unit="s",
            description="Manual capture: time left before the soonest held authorization lapses.",
        )
        meter.create_observable_gauge(
            "escrow_connect.money_operations.unresolved",
            callbacks=[_observe(metrics, _unresolved_observations)],
            unit="{operation}",
            description="Money calls whose outcome is pending or unknown.",
        )


_instruments: _Instruments | None = None
_unavailable = False
_instruments_lock = threading.Lock()


def _otel() -> _Instruments | None:
    """The instruments if OpenTelemetry is installed and enabled, else ``None``.

    The hot path when it is off: one cached setting read, one global read.
    """
    if not escrow_settings.OPENTELEMETRY:
        return None
    if _instruments is not None:
        return _instruments
    return None if _unavailable else _install()


def _install() -> _Instruments | None:
    global _instruments, _unavailable
    with _instruments_lock:
        if _instruments is None and not _unavailable:
            try:
                from opentelemetry import metrics, trace
            except ImportError:
                _unavailable = True
                return None
            _instruments = _Instruments(trace, metrics)
    return _instruments


def install() -> None:
    """Create the tracer and instruments now (the app's ``ready()`` calls this).

    The observable gauges exist from start-up, so an exporter sees them before
    the first span. Does nothing when OpenTelemetry is absent or turned off.
    """
    _otel()


class _NoSpan:
    """What :func:`span` yields when tracing is off: one shared object, no work."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def set_attributes(self, **attributes: Any) -> None:
        return None

    def set_error(self, error: BaseException | str) -> None:
        return None


_NO_SPAN = _NoSpan()


class _Span:
    """A live OpenTelemetry span; :meth:`set_attributes` filters like :func:`safe_attributes`."""

    __slots__ = ("_attributes", "_manager", "_name", "_span", "_tracer")

    def __init__(self, tracer: Any, name: str, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = attributes
        self._manager: Any = None
        self._span: Any = None

    def __enter__(self) -> _Span:
        # Exceptions are not recorded with their message and traceback (an
        # error's text may quote a payload); the type and status say enough
        # and the log record has the rest.
        self._manager = self._tracer.start_as_current_span(
            self._name,
            attributes=safe_attributes(self._attributes),
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = self._manager.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.set_error(exc)
        self._manager.__exit__(exc_type, exc, tb)

    def set_error(self, error: BaseException | str) -> None:
        """Mark the span failed: by an exception (its type, ``code``, HTTP status) or a word.

        The exception's message is not recorded (it may quote a payload).
        """
        from opentelemetry.trace import Status, StatusCode

        if isinstance(error, BaseException):
            kind = type(error).__name__
            code = getattr(error, "code", None)
            if isinstance(code, str) and code:
                self._span.set_attribute("error.code", code)
            status = getattr(error, "http_status", None)
            if isinstance(status, int):
                self._span.set_attribute("error.http_status", status)
        else:
            kind = error
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR, kind))

    def set_attributes(self, **attributes: Any) -> None:
        """Add attributes learned during the work (an outcome, an event type)."""
        self._span.set_attributes(safe_attributes(attributes))


def tracing_enabled() -> bool:
    """Whether :func:`span` records anything (to skip building attributes when not)."""
    return _otel() is not None


def span(name: str, **attributes: Any) -> _NoSpan | _Span:
    """A context manager timing ``name`` as an OpenTelemetry span, if enabled.

    Yields an object with ``set_attributes(**attributes)`` for what is known
    only at the end. An exception leaving the block marks the span as an
    error (``error.type``, ``error.code``) and propagates unchanged. Without
    OpenTelemetry, or with ``ESCROW_CONNECT["OPENTELEMETRY"] = False``, it is a
    shared no-op.
    """
    instruments = _otel()
    if instruments is None:
        return _NO_SPAN
    return _Span(instruments.tracer, name, attributes)


# --------------------------------------------------------------------------
# Counters: process-local always, OpenTelemetry when enabled
# --------------------------------------------------------------------------

_counts_lock = threading.Lock()
_webhook_events: Counter[tuple[str, str]] = Counter()
_stripe_requests: Counter[str] = Counter()
_stripe_errors: Counter[tuple[str, str, str]] = Counter()
_started_at = time.time()


def record_webhook_event(event_type: str | None, outcome: str) -> None:
    """Count one webhook delivery or event processing and how it ended.

    ``outcome`` is an :class:`~django_escrow_connect.webhooks.receiver.Outcome`
    status: ``processed``, ``ignored``, ``deferred``, ``failed``,
    ``duplicate``, ``queued``, ``rejected`` or ``skipped``.
    """
    event_type = event_type or "unknown"
    with _counts_lock:
        _webhook_events[event_type, outcome] += 1
    instruments = _otel()
    if instruments is not None:
        instruments.webhook_events.add(1, {"event_type": event_type, "outcome": outcome})


def record_stripe_request(method: str) -> None:
    """Count one gateway call."""
    with _counts_lock:
        _stripe_requests[method] += 1
    instruments = _otel()
    if instruments is not None:
        instruments.stripe_requests.add(1, {"method": method})


def record_stripe_error(method: str, code: str | None, http_status: int | None) -> None:
    """Count one gateway call that failed, by Stripe's error code and HTTP status.

    A missing code counts as ``"none"``, a missing status (no response: a
    network error or a timeout) as ``"none"``.
    """
    code = code or "none"
    status = str(http_status) if http_status is not None else "none"
    with _counts_lock:
        _stripe_errors[method, code, status] += 1
    instruments = _otel()
    if instruments is not None:
        instruments.stripe_errors.add(1, {"method": method, "code": code, "http_status": status})


def reset_counters() -> None:
    """Zero the process-local counters (tests; a host rotating its own export)."""
    global _started_at
    with _counts_lock:
        _webhook_events.clear()
        _stripe_requests.clear()
        _stripe_errors.clear()
        _started_at = time.time()


def _process_counters() -> dict[str, Any]:
    with _counts_lock:
        return {
            "since": _started_at,
            "webhook_events": [
                {"event_type": event_type, "outcome": outcome, "count": count}
                for (event_type, outcome), count in sorted(_webhook_events.items())
            ],
            "stripe_requests": [
                {"method": method, "count": count}
                for method, count in sorted(_stripe_requests.items())
            ],
            "stripe_errors": [
                {"method": method, "code": code, "http_status": status, "count": count}
                for (method, code, status), count in sorted(_stripe_errors.items())
            ],
        }


# --------------------------------------------------------------------------
# The database snapshot: a constant number of aggregate queries
# --------------------------------------------------------------------------


def _open_incidents() -> dict[str, int]:
    """Unresolved incidents by kind, payment and transfer incidents together: two queries.

    Declined payments (:data:`.states.INCIDENTS_NEEDING_NOBODY`) are left out:
    nothing resolves them, so they would only ever add up; their rate is the
    ``payment_intent.payment_failed`` count of ``escrow_connect.webhook.events``.
    """
    incidents: Counter[str] = Counter()
    for model in ("PaymentIncident", "TransferIncident"):
        rows = (
            swappable.load(model)
            .objects.filter(resolved_at__isnull=True)
            .exclude(kind__in=INCIDENTS_NEEDING_NOBODY)
            .order_by()
            .values("kind")
            .annotate(count=Count("pk"))
        )
        for row in rows:
            incidents[row["kind"]] += row["count"]
    return dict(sorted(incidents.items()))


def _payments_held() -> list[dict[str, Any]]:
    """Payments still holding money, by currency: count, amount still held,
    oldest age, soonest capture deadline. One query.

    Held is the doer's dashboard's definition (:func:`.holdings.holding`): a
    milestone release leaves a payment partially released and a release in
    flight leaves it releasing, and a partial dispute lost leaves the rest
    of a ``dispute_lost`` payment held until it is released. Each still
    holds the part not yet paid out, refunded or lost, so the amount is what
    remains (``amount_held``), not the gross charge; a release a lost dispute
    caught in flight counts what it takes out of escrow, as it did while
    ``releasing`` (:func:`.holdings.held_counted`).
    """
    now = timezone.now()
    Payment = swappable.load("EscrowPayment")
    rows = (
        Payment.objects.filter(holding())
        .order_by()
        .values("currency")
        .annotate(
            count=Count("pk"),
            amount=Sum(held_counted()),
            oldest=Min("held_at"),
            # Only an authorization not captured yet has a deadline: a lost
            # dispute's charge was captured, whatever capture_before says.
            capture_deadline=Min(
                "capture_before", filter=Q(status__in=transitions.sources(Payment, "release"))
            ),
        )
        .order_by("currency")
    )
    return [
        {
            "currency": row["currency"],
            "count": row["count"],
            "amount": row["amount"] or 0,
            "oldest_age_seconds": _age(now, row["oldest"]),
            # Manual capture: seconds until the soonest authorization lapses
            # (negative once past); None when no held payment has a deadline.
            "capture_deadline_seconds": (
                int((row["capture_deadline"] - now).total_seconds())
                if row["capture_deadline"] is not None
                else None
            ),
        }
        for row in rows
    ]


def _money_operations_unresolved() -> list[dict[str, Any]]:
    """Pending and unknown money calls by status, with the oldest's age. One query."""
    now = timezone.now()
    rows = (
        swappable.load("MoneyOperation")
        .objects.filter(status__in=UNRESOLVED_OPERATION_STATES)
        .order_by()
        .values("status")
        .annotate(count=Count("pk"), oldest=Min("created_at"))
        .order_by("status")
    )
    return [
        {
            "status": row["status"],
            "count": row["count"],
            "oldest_age_seconds": _age(now, row["oldest"]),
        }
        for row in rows
    ]


def _age(now: Any, moment: Any) -> int:
    return max(0, int((now - moment).total_seconds())) if moment is not None else 0


def metrics_snapshot() -> dict[str, Any]:
    """Everything a host may export, as plain data (no OpenTelemetry needed).

    ``incidents_open`` (unresolved incidents by kind, declined payments left
    out: nothing resolves them), ``payments_held`` (by
    currency: count, total amount in minor units, age of the oldest in
    seconds, and with manual capture the seconds left before the soonest
    ``capture_before``), ``money_operations_unresolved`` (pending/unknown money calls by
    status, with the oldest's age), and this process's counters since it
    started (or since :func:`reset_counters`): ``webhook_events``,
    ``stripe_requests``, ``stripe_errors``. The database part costs four
    aggregate queries however many rows there are.
    """
    return {
        "incidents_open": _open_incidents(),
        "payments_held": _payments_held(),
        "money_operations_unresolved": _money_operations_unresolved(),
        **_process_counters(),
    }


# The gauges' callbacks run at each export (in the exporter's thread, with
# its own database connection); each reads only its part.


def _incident_observations() -> Iterator[tuple[int, dict[str, str]]]:
    for kind, count in _open_incidents().items():
        yield count, {"kind": kind}


def _held_observations() -> Iterator[tuple[int, dict[str, str]]]:
    for row in _payments_held():
        yield row["count"], {"currency": row["currency"]}


def _held_age_observations() -> Iterator[tuple[int, dict[str, str]]]:
    for row in _payments_held():
        yield row["oldest_age_seconds"], {"currency": row["currency"]}


def _capture_deadline_observations() -> Iterator[tuple[int, dict[str, str]]]:
    for row in _payments_held():
        if row["capture_deadline_seconds"] is not None:
            yield row["capture_deadline_seconds"], {"currency": row["currency"]}


def _unresolved_observations() -> Iterator[tuple[int, dict[str, str]]]:
    for row in _money_operations_unresolved():
        yield row["count"], {"status": row["status"]}


def _observe(metrics: Any, read: Any) -> Any:
    """An observable-gauge callback: ``read()``'s values, nothing when turned off."""

    def callback(options: Any) -> list[Any]:
        if not escrow_settings.OPENTELEMETRY:
            return []
        try:
            return [metrics.Observation(value, attributes) for value, attributes in read()]
        except Exception:  # a failed export must not break the exporter thread
            logger.exception("escrow metrics gauge failed")
            return []

    return callback


# --------------------------------------------------------------------------
# Prometheus text exposition
# --------------------------------------------------------------------------


def _label(value: Any) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _sample(name: str, labels: Mapping[str, Any], value: Any) -> str:
    inner = ",".join(f"{key}={_label(label)}" for key, label in labels.items())
    return f"{name}{{{inner}}} {value}" if inner else f"{name} {value}"


#: (metric, type, help, snapshot key, label names, value key)
_PROMETHEUS_FAMILIES = (
    (
        "escrow_connect_payments_held",
        "gauge",
        "Payments held in escrow.",
        "payments_held",
        ("currency",),
        "count",
    ),
    (
        "escrow_connect_payments_held_amount",
        "gauge",
        "Total amount held in escrow, in minor units.",
        "payments_held",
        ("currency",),
        "amount",
    ),
    (
        "escrow_connect_payments_held_oldest_age_seconds",
        "gauge",
        "Age of the oldest held payment.",
        "payments_held",
        ("currency",),
        "oldest_age_seconds",
    ),
    (
        "escrow_connect_payments_held_capture_deadline_seconds",
        "gauge",
        "Manual capture: seconds before the soonest held authorization lapses.",
        "payments_held",
        ("currency",),
        "capture_deadline_seconds",
    ),
    (
        "escrow_connect_money_operations_unresolved",
        "gauge",
        "Money calls whose outcome is pending or unknown.",
        "money_operations_unresolved",
        ("status",),
        "count",
    ),
    (
        "escrow_connect_money_operations_unresolved_oldest_age_seconds",
        "gauge",
        "Age of the oldest unresolved money call.",
        "money_operations_unresolved",
        ("status",),
        "oldest_age_seconds",
    ),
    (
        "escrow_connect_webhook_events_total",
        "counter",
        "Webhook deliveries and event processings in this process, by type and outcome.",
        "webhook_events",
        ("event_type", "outcome"),
        "count",
    ),
    (
        "escrow_connect_stripe_requests_total",
        "counter",
        "Gateway calls in this process, by method.",
        "stripe_requests",
        ("method",),
        "count",
    ),
    (
        "escrow_connect_stripe_errors_total",
        "counter",
        "Gateway calls that failed in this process, by method, code and HTTP status.",
        "stripe_errors",
        ("method", "code", "http_status"),
        "count",
    ),
)


def render_prometheus(snapshot: Mapping[str, Any]) -> str:
    """A :func:`metrics_snapshot` in the Prometheus text exposition format (0.0.4).

    For a node-exporter textfile collector fed by cron, or a host's own
    ``/metrics`` view (served from the web process, the counters are that
    process's).
    """
    lines = [
        "# HELP escrow_connect_incidents_open Unresolved payment and transfer incidents "
        "that need a person (declined payments left out).",
        "# TYPE escrow_connect_incidents_open gauge",
    ]
    lines += [
        _sample("escrow_connect_incidents_open", {"kind": kind}, count)
        for kind, count in snapshot["incidents_open"].items()
    ]
    for name, kind, help_text, key, labels, value_key in _PROMETHEUS_FAMILIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [
            _sample(name, {label: row[label] for label in labels}, row[value_key])
            for row in snapshot[key]
            if row[value_key] is not None
        ]
    return "\n".join(lines) + "\n"
