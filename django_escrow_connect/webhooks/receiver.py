"""Receive one Stripe webhook delivery: verify, record once, process.

:func:`receive` is the single entry point. The HTTP views call it with the
raw request body, and so does the simulated gateway's default event sink, so
a development setup exercises exactly the code production runs.

Order of work, and why:

1. *Verify* (nothing is written before this passes): body size, the
   ``Stripe-Signature`` against any of the endpoint's secrets (rotation),
   the timestamp tolerance, UTF-8 and JSON, then every ``validate_event``
   in the endpoint's class hierarchy (Connect ``account``...), then the
   live/test mode. Each failure is a 4xx with a short reason; a test-mode
   event on a live installation's Connect endpoint is answered 200 and not
   stored (``skipped``: Stripe sends those to live Connect endpoints).
2. *Record* the event once, keyed by its unique Stripe id: a duplicate
   delivery, concurrent or later, cannot create a second row. In sync mode a
   read comes first: an event already stored is answered by it alone.
3. *Process* it now (``WEBHOOK_PROCESSING="sync"``: the insert and the
   handler's writes commit together, see :func:`.pipeline.process_new`; on
   PostgreSQL a handler's common case may be one statement with the insert,
   :mod:`.shortcuts`) or hand it to a task worker (``"task"``); see
   :mod:`.pipeline`.
"""

from __future__ import annotations

import logging
import re
import weakref
from datetime import datetime, timezone
from typing import Any, Literal, overload

from django.db import DatabaseError, DataError, connections, router

from .. import observability, swappable
from ..conf import escrow_settings, live_mode_configured
from ..exceptions import InvalidWebhookPayload, SignatureVerificationFailed
from ..gateway import get_gateway
from ..states import WebhookEndpoint
from . import pipeline, shortcuts
from .dispatch import dispatch_recorded
from .pipeline import Outcome

logger = logging.getLogger("django_escrow_connect.webhooks")

__all__ = [
    "ENDPOINTS",
    "ConnectEndpoint",
    "EndpointSpec",
    "Outcome",
    "PlatformEndpoint",
    "ThinEndpoint",
    "WebhookRejected",
    "WebhookSkipped",
    "receive",
]


class WebhookRejected(Exception):
    """A delivery failed verification: ``status_code`` and a short ``reason``."""

    def __init__(self, reason: str, status_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class WebhookSkipped(Exception):
    """A genuine delivery this installation does not want: answered 200, nothing stored.

    A live-mode Connect endpoint also receives the *test-mode* events of
    accounts connected to the platform in both modes. Refusing them would make
    Stripe retry for days and flag the endpoint as failing.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Deepest nesting an event may have. Stripe's objects are a handful of levels
#: deep; anything beyond this is refused (400) before it reaches recursive code
#: (copying, storing, PostgreSQL's jsonb).
MAX_EVENT_DEPTH = 64
#: The last ``created`` a datetime can hold (9999-12-31T23:59:59Z).
MAX_CREATED = 253_402_300_799
#: Characters no text column or PostgreSQL jsonb value can store: U+0000 and
#: lone surrogates (JSON can escape both; neither can be encoded in UTF-8 text).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: What an unstorable character becomes in the stored payload.
REPLACEMENT_CHARACTER = "\ufffd"


def nesting_depth(value: Any) -> int:
    """How deep ``value`` nests dicts and lists (iterative: no recursion limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_EVENT_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


class EndpointSpec:
    """One webhook endpoint: its secrets and the checks its events must pass.

    Modelled on django-anymail's base webhook view: :meth:`run_validators`
    calls ``validate_payload`` and ``validate_event`` of *every* class in the
    hierarchy, base first, so a subclass adds checks but cannot skip one.
    """

    name: str = ""
    secrets_setting: str = ""
    #: A live-mode installation answers this endpoint's test-mode events 200
    #: and stores nothing (Stripe sends them to live Connect endpoints).
    skips_test_events_when_live: bool = False
    #: Thin (v2) events: ``v2.core.event`` with a ``related_object`` and an
    #: RFC 3339 ``created``, instead of a snapshot in ``data.object``.
    thin: bool = False

    def secrets(self) -> list[str]:
        """The configured signing secrets; empty (every delivery refused) if misconfigured.

        Only a list or tuple is read. A bare string (``"whsec_..."`` without
        brackets) would otherwise be iterated character by character, and an
        event signed with the one-character secret ``"w"`` would verify: it is
        refused as a whole instead (:meth:`secrets_problem` says why, system
        check E020/E072 too).
        """
        value = getattr(escrow_settings, self.secrets_setting)
        if not isinstance(value, (list, tuple)):
            return []
        return [secret for secret in value if isinstance(secret, str) and secret]

    def secrets_problem(self) -> str:
        """Why :meth:`secrets` is empty: the reason every delivery is refused."""
        setting = f"ESCROW_CONNECT[{self.secrets_setting!r}]"
        value = getattr(escrow_settings, self.secrets_setting)
        if value and not isinstance(value, (list, tuple)):
            return (
                f"{setting} is a {type(value).__name__}, not a list of signing secrets; "
                f"no secret of the {self.name} endpoint is used until it is a list "
                '(["whsec_..."]).'
            )
        return f"No signing secret configured for the {self.name} endpoint ({setting})."

    def _left_to_gateway(self, gateway: Any) -> bool:
        """Whether an empty secrets setting is left to the gateway's own secret.

        A gateway that verifies its events without configured secrets says so
        (``verifies_without_configured_secrets``: the simulated one, which signs
        with its development secret, so a development host needs no
        ``whsec_`` setting and system check W021 stays quiet). Refusing here
        first would drop every event it sends. A bare string stays refused:
        that is a mistake to fix, not an empty setting. The simulated gateway
        never runs with ``DEBUG`` off outside tests (system check E011).
        """
        value = getattr(escrow_settings, self.secrets_setting)
        if value and not isinstance(value, (list, tuple)):
            return False
        return getattr(gateway, "verifies_without_configured_secrets", False) is True

    def run_validators(self, method: str, *args: Any) -> None:
        for klass in reversed(type(self).__mro__):
            validator = klass.__dict__.get(method)
            if validator is not None:
                validator(self, *args)

    def validate_payload(self, payload: bytes) -> None:
        limit = escrow_settings.WEBHOOK_MAX_BODY_BYTES
        if len(payload) > limit:
            raise WebhookRejected(f"Body larger than {limit} bytes.", status_code=413)
        if not payload:
            raise WebhookRejected("Empty body.")

    def validate_event(self, event: dict[str, Any]) -> None:
        if nesting_depth(event) > MAX_EVENT_DEPTH:
            raise WebhookRejected(f"The event is nested deeper than {MAX_EVENT_DEPTH} levels.")
        if event.get("object") not in ((THIN_EVENT_OBJECT,) if self.thin else (None, "event")):
            raise WebhookRejected("Not an event object.")
        # Stored as they are (unique id, type): refuse what a column would
        # truncate or what would make every later event a duplicate.
        for key, limit in (("id", 255), ("type", 128)):
            value = event.get(key)
            if not isinstance(value, str) or not 0 < len(value) <= limit:
                raise WebhookRejected(
                    f"The event's {key!r} is not a string of 1-{limit} characters."
                )
        for key in ("id", "type", "account", "api_version"):
            value = event.get(key)
            if isinstance(value, str) and UNSTORABLE.search(value):
                raise WebhookRejected(f"The event's {key!r} holds a NUL or an unpaired surrogate.")
        if self.thin:
            self._validate_thin(event)
        else:
            self._validate_snapshot(event)
        livemode = event.get("livemode")
        if not isinstance(livemode, bool):
            raise WebhookRejected("The event has no livemode flag.")

    def _validate_snapshot(self, event: dict[str, Any]) -> None:
        created = event.get("created")
        if created is not None and (
            not isinstance(created, int)
            or isinstance(created, bool)
            or not 0 <= created <= MAX_CREATED
        ):
            raise WebhookRejected("The event's 'created' is not a Unix timestamp.")
        data = event.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
            raise WebhookRejected("The event has no data.object.")

    def _validate_thin(self, event: dict[str, Any]) -> None:
        if thin_created(event) is None:
            raise WebhookRejected("The event's 'created' is not an RFC 3339 timestamp.")
        related = event.get("related_object")
        if related is not None:
            if not isinstance(related, dict):
                raise WebhookRejected("The event's 'related_object' is not an object.")
            for key in ("id", "type"):
                value = related.get(key)
                if not isinstance(value, str) or not 0 < len(value) <= 255:
                    raise WebhookRejected(
                        f"The event's related_object.{key} is not a string of 1-255 characters."
                    )
                if UNSTORABLE.search(value):
                    raise WebhookRejected(
                        f"The event's related_object.{key} holds a NUL or an unpaired surrogate."
                    )
        context = event.get("context")
        if context is not None and (
            not isinstance(context, str) or len(context) > 255 or UNSTORABLE.search(context)
        ):
            raise WebhookRejected("The event's 'context' is not an account id.")

    def check_mode(self, event: dict[str, Any]) -> None:
        """The event's mode must be the installation's (after every validator passed).

        A live installation skips the test-mode events of an endpoint that
        :attr:`skips_test_events_when_live`; any other mismatch is refused.
        """
        livemode = event["livemode"]
        live = live_mode_configured()
        if livemode == live:
            return
        if live and self.skips_test_events_when_live:
            raise WebhookSkipped("Test-mode event on a live-mode installation; not recorded.")
        expected = "live" if live else "test"
        raise WebhookRejected(
            f"A {'live' if livemode else 'test'}-mode event reached a {expected}-mode installation."
        )

    def verify(self, payload: bytes, signature_header: str | None) -> dict[str, Any]:
        """The verified event, or :class:`WebhookRejected`."""
        self.run_validators("validate_payload", payload)
        secrets = self.secrets()
        gateway = get_gateway()
        if not secrets and not self._left_to_gateway(gateway):
            raise WebhookRejected(self.secrets_problem())
        tolerance = int(escrow_settings.WEBHOOK_TOLERANCE_SECONDS or 0)
        if tolerance <= 0:
            # Never disable the replay window: 0 would accept any old delivery.
            tolerance = 300
        try:
            event = gateway.verify_webhook(payload, signature_header, secrets, tolerance)
        except SignatureVerificationFailed as exc:
            raise WebhookRejected(str(exc) or "Invalid signature.") from None
        except InvalidWebhookPayload as exc:
            raise WebhookRejected(str(exc) or "Invalid payload.") from None
        if not isinstance(event, dict):
            raise WebhookRejected("The webhook body is not an event.")
        self.run_validators("validate_event", event)
        self.check_mode(event)
        return event


class PlatformEndpoint(EndpointSpec):
    """Events about the platform's own account (payments, transfers, disputes)."""

    name = WebhookEndpoint.PLATFORM
    secrets_setting = "WEBHOOK_SECRETS"

    def validate_event(self, event: dict[str, Any]) -> None:
        if event.get("account"):
            raise WebhookRejected(
                "A Connect event (with 'account') reached the platform endpoint; "
                "send it to the Connect endpoint."
            )


class ConnectEndpoint(EndpointSpec):
    """Events about connected accounts; each carries a top-level ``account``."""

    name = WebhookEndpoint.CONNECT
    secrets_setting = "CONNECT_WEBHOOK_SECRETS"
    skips_test_events_when_live = True

    def validate_event(self, event: dict[str, Any]) -> None:
        account = event.get("account")
        if not isinstance(account, str) or not account.startswith("acct_"):
            raise WebhookRejected("A Connect event must name its connected 'account'.")


class ThinEndpoint(EndpointSpec):
    """Thin events from an event destination (Accounts v2: ``v2.core.account...``).

    The payload says what changed and names the related object; processing
    fetches the object from Stripe (:mod:`.handlers.thin`). The signature is
    Stripe's usual ``Stripe-Signature`` (what ``parse_event_notification``
    verifies), with the destination's own secrets. A live destination may
    also deliver connected accounts' test-mode events: answered 200, not stored.
    """

    name = WebhookEndpoint.THIN
    secrets_setting = "THIN_WEBHOOK_SECRETS"
    skips_test_events_when_live = True
    thin = True


ENDPOINTS: dict[str, EndpointSpec] = {
    WebhookEndpoint.PLATFORM: PlatformEndpoint(),
    WebhookEndpoint.CONNECT: ConnectEndpoint(),
    WebhookEndpoint.THIN: ThinEndpoint(),
}


def receive(endpoint: str, payload: bytes, signature_header: str | None) -> Outcome:
    """Verify, record and process one delivery for ``endpoint`` (platform/connect/thin).

    Never raises for a bad delivery: the :class:`Outcome` carries the HTTP
    status. A processing error is ``failed`` with status 500 so that Stripe
    delivers the event again.
    """
    spec = ENDPOINTS.get(endpoint)
    if spec is None:
        raise ValueError(f"Unknown webhook endpoint {endpoint!r}")
    try:
        event = spec.verify(bytes(payload), signature_header)
    except WebhookRejected as exc:
        logger.warning(
            "webhook rejected: %s",
            exc.reason,
            extra={"webhook_endpoint": spec.name, "http_status": exc.status_code},
        )
        observability.record_webhook_event(None, "rejected")
        return Outcome(exc.status_code, "rejected", exc.reason)
    except WebhookSkipped as exc:
        logger.debug(
            "webhook skipped: %s",
            exc.reason,
            extra={"webhook_endpoint": spec.name, "http_status": 200},
        )
        observability.record_webhook_event(None, "skipped")
        return Outcome(200, "skipped", exc.reason)

    try:
        return _record_and_process(spec, event)
    except DataError as exc:
        # The database refused the event row itself (a value no column can
        # hold): a clear 4xx rather than a 500, and the reason in the log.
        logger.error(
            "webhook could not be stored: %s",
            exc,
            extra={
                "webhook_endpoint": spec.name,
                "stripe_event_id": event.get("id"),
                "event_type": event.get("type"),
                "http_status": 400,
            },
        )
        observability.record_webhook_event(str(event.get("type") or ""), "rejected")
        return Outcome(400, "rejected", "The event could not be stored.")


def _record_and_process(spec: EndpointSpec, event: dict[str, Any]) -> Outcome:
    if escrow_settings.WEBHOOK_PROCESSING == "task":
        return dispatch_recorded(record(spec.name, event))
    # Already recorded? One indexed read, outside any transaction: a duplicate
    # is answered by it alone (no transaction, no failing insert to roll
    # back), and a redelivered failed event goes straight to its retry. A
    # concurrent first delivery that slips past it still meets the unique
    # insert below.
    known = recorded_state(event, missing_ok=True)
    if known is not None:
        return dispatch_recorded(known)
    shortcut = shortcuts.plan(spec.name, event)
    if shortcut is not None:
        # The handler's common case and the event's insert in one statement
        # (webhooks/shortcuts.py); whatever it does not settle goes on as a
        # recorded event.
        try:
            found = shortcuts.process(new_event_row(spec.name, event), shortcut, object_id(event))
        except DatabaseError as exc:
            # Nothing was written (one statement, rolled back): the usual path
            # records and reports whatever the database objects to.
            logger.warning(
                "webhook shortcut failed; taking the usual path: %s",
                exc,
                extra={"stripe_event_id": event.get("id"), "event_type": event.get("type")},
            )
        else:
            if isinstance(found, Outcome):
                return found
            return dispatch_recorded(found if found is not None else recorded_state(event))
    try:
        outcome = pipeline.process_new(new_event_row(spec.name, event))
    except pipeline.HandlerFailed as failed:
        # Rolled back, event row included: record it again, then the failure.
        return pipeline.settle_failure(record(spec.name, event), failed)
    if outcome is not None:
        return outcome
    # Already recorded: a duplicate, or a failed event that Stripe redelivers.
    return dispatch_recorded(recorded_state(event))


#: The ``object`` of a thin event.
THIN_EVENT_OBJECT = "v2.core.event"


def thin_created(event: dict[str, Any]) -> datetime | None:
    """A thin event's ``created`` (RFC 3339) as an aware datetime, or None if it is not one."""
    value = event.get("created")
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        # OverflowError: a valid time whose UTC moment is before year 1 or
        # after 9999 (``0001-01-01T00:00:00+14:00``) was a 500.
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


def is_thin(event: dict[str, Any]) -> bool:
    return event.get("object") == THIN_EVENT_OBJECT


def object_id(event: dict[str, Any]) -> str:
    """The id of what a verified event is about (a thin event's: its related object)."""
    if is_thin(event):
        related = event.get("related_object")
        return str(related.get("id") or "") if isinstance(related, dict) else ""
    return str(event["data"]["object"].get("id") or "")


def _event_account(event: dict[str, Any]) -> str:
    """The connected account an event is about (blank: the platform's own)."""
    if not is_thin(event):
        return str(event.get("account") or "")
    related = event.get("related_object")
    if isinstance(related, dict) and related.get("type") == "v2.core.account":
        return str(related.get("id") or "")
    # Objects inside a connected account carry its id as their context.
    return str(event.get("context") or "")


def new_event_row(endpoint: str, event: dict[str, Any]) -> Any:
    """An unsaved WebhookEvent for a verified event (snapshot or thin)."""
    WebhookEvent = swappable.load("WebhookEvent")
    payload = scrub(event)
    created = event.get("created")
    api_version = payload.get("api_version")
    if is_thin(event):
        stripe_created = thin_created(event)
    elif isinstance(created, int) and not isinstance(created, bool):
        stripe_created = datetime.fromtimestamp(created, tz=timezone.utc)
    else:
        stripe_created = None
    return WebhookEvent(
        stripe_event_id=event["id"][:255],
        type=event["type"][:128],
        endpoint=endpoint,
        account=_event_account(event)[:255],
        livemode=bool(event.get("livemode")),
        thin=is_thin(event),
        api_version=(api_version if isinstance(api_version, str) else "")[:64],
        object_id=object_id(payload)[:255],
        stripe_created=stripe_created,
        payload=payload,
    )


def record(endpoint: str, event: dict[str, Any]) -> pipeline.RecordedEvent:
    """Store a verified event once (as ``received``); the caller learns its current state.

    One ``INSERT ... ON CONFLICT DO NOTHING`` and one read of the row's
    state (one statement on PostgreSQL): a concurrent or later duplicate
    finds the row and does nothing.
    """
    WebhookEvent = swappable.load("WebhookEvent")
    row = new_event_row(endpoint, event)
    connection = connections[router.db_for_write(WebhookEvent)]
    if connection.vendor == "postgresql" and pipeline.insert_statement_usable(
        WebhookEvent, connection
    ):
        # Insert and state read in one statement (webhooks/shortcuts.py).
        found = shortcuts.record(row, None, object_id(event))
        if found.inserted:
            return pipeline.RecordedEvent.inserted(row, found.pk)
        if found.recorded is not None:
            return found.recorded
        return recorded_state(event)
    WebhookEvent.objects.bulk_create([row], ignore_conflicts=True)
    return recorded_state(event)


@overload
def recorded_state(
    event: dict[str, Any], *, missing_ok: Literal[False] = False
) -> pipeline.RecordedEvent: ...


@overload
def recorded_state(
    event: dict[str, Any], *, missing_ok: Literal[True]
) -> pipeline.RecordedEvent | None: ...


def recorded_state(
    event: dict[str, Any], *, missing_ok: bool = False
) -> pipeline.RecordedEvent | None:
    """The stored row of a verified event (one query); ``None`` if ``missing_ok`` and none."""
    WebhookEvent = swappable.load("WebhookEvent")
    connection = connections[router.db_for_read(WebhookEvent)]
    sql, pk_converters, pk_column = _state_query(WebhookEvent, connection)
    # Raw SQL built once per model: this read is all a duplicate costs, and
    # compiling the same queryset on every delivery cost more than running it.
    with connection.cursor() as cursor:
        cursor.execute(sql, [event["id"][:255]])
        row = cursor.fetchone()
    if row is None:
        if missing_ok:
            return None
        # The insert above or an earlier one made it.
        raise RuntimeError(f"Webhook event {event['id']} was not recorded")  # pragma: no cover
    pk, status, type_, account = row
    for converter in pk_converters:
        pk = converter(pk, pk_column, connection)
    return pipeline.RecordedEvent(
        pk=pk,
        stripe_event_id=event["id"],
        type=type_,
        account=account,
        status=status,
        object_id=object_id(event),
    )


#: Per connection, per event model: the state query, and how its pk is converted.
_STATE_QUERIES: weakref.WeakKeyDictionary[Any, dict[Any, tuple[str, list[Any], Any]]] = (
    weakref.WeakKeyDictionary()
)


def _state_query(model: Any, connection: Any) -> tuple[str, list[Any], Any]:
    per_model = _STATE_QUERIES.setdefault(connection, {})
    found = per_model.get(model)
    if found is None:
        opts = model._meta
        quote = connection.ops.quote_name
        columns = ", ".join(
            quote(opts.get_field(name).column) for name in ("status", "type", "account")
        )
        sql = (
            f"SELECT {quote(opts.pk.column)}, {columns} FROM {quote(opts.db_table)} "  # noqa: S608
            f"WHERE {quote(opts.get_field('stripe_event_id').column)} = %s"
        )
        pk_column = opts.pk.get_col(opts.db_table)
        converters = connection.ops.get_db_converters(pk_column) + opts.pk.get_db_converters(
            connection
        )
        found = per_model[model] = (sql, converters, pk_column)
    return found


#: Keys never kept in the event log (a PaymentIntent's client_secret lets a
#: browser confirm the payment).
SCRUBBED_KEYS = frozenset({"client_secret"})


def scrub(value: Any) -> Any:
    """A storable copy of ``value``, without secrets meant for the browser only.

    Strings (keys too) lose what no database text can hold: U+0000 and
    unpaired surrogates become U+FFFD. Handlers read this copy.
    """
    if isinstance(value, dict):
        return {_storable(k): (None if k in SCRUBBED_KEYS else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return _storable(value)
    return value


def _storable(value: Any) -> Any:
    if isinstance(value, str) and UNSTORABLE.search(value):
        return UNSTORABLE.sub(REPLACEMENT_CHARACTER, value)
    return value
