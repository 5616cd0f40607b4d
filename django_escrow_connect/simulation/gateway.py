"""The simulated gateway: the PaymentGateway protocol against the simulated store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..gateway.arguments import require_id as _require_id
from ..gateway.signing import verify_webhook_payload
from .accounts import (
    SimulatedAccounts,
)
from .accounts_v2 import SimulatedAccountsV2
from .actions import (
    SimulatedActions,
)
from .events import (
    SIMULATED_WEBHOOK_SECRET,
)
from .objects import (
    JSON,
)
from .payments import (
    SimulatedPayments,
)
from .store import (
    SimulatedStripe,
    simulated_stripe,
)
from .transfers import (
    SimulatedTransfers,
)


class SimulatedGateway(
    SimulatedAccounts,
    SimulatedAccountsV2,
    SimulatedPayments,
    SimulatedTransfers,
    SimulatedActions,
):
    """:class:`~django_escrow_connect.gateway.base.PaymentGateway` without Stripe or money.

    Configure with ``ESCROW_CONNECT = {"GATEWAY":
    "django_escrow_connect.simulation.SimulatedGateway"}`` (refused by a
    system check when DEBUG is off). Instances are cheap and share
    :data:`simulated_stripe` unless given their own ``store``.

    The protocol's methods come from :mod:`.accounts`, :mod:`.payments` and
    :mod:`.transfers` (events are here); the other parties' actions
    (``confirm_payment_intent``, ``complete_onboarding``, ``open_dispute``...)
    from :mod:`.actions`. All of them act on ``store``.
    """

    #: It signs its events with :data:`SIMULATED_WEBHOOK_SECRET` and accepts
    #: that one secret when none is configured (:meth:`verify_webhook`), so a
    #: development host needs no ``whsec_`` setting.
    verifies_without_configured_secrets = True

    def __init__(self, store: SimulatedStripe | None = None) -> None:
        self.store = store if store is not None else simulated_stripe

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"

    def retrieve_event(self, event_id: str, *, stripe_account: str | None = None) -> dict[str, Any]:
        _require_id(event_id, "event_id")
        s = self.store

        def action() -> JSON:
            event = s.events.get(event_id)
            # Connect events live on the connected account: fetch them with its id.
            if event is None or event.get("account") != stripe_account:
                raise s.missing("event", event_id, "id")
            return event

        params = {"event_id": event_id, "stripe_account": stripe_account}
        return s.execute("retrieve_event", params, action)

    def list_events(
        self,
        *,
        created_gte: int,
        types: Sequence[str] | None = None,
        stripe_account: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events created at or after ``created_gte`` (simulated unix seconds), newest first."""
        if isinstance(types, str):
            raise TypeError("types must be a sequence of event types, not a string")
        if types and len(types) > 20:
            raise ValueError("Stripe accepts at most 20 event types at once")
        s = self.store
        wanted = set(types) if types else None

        def action() -> list[JSON]:
            if stripe_account is not None:
                s.account(stripe_account)
            found = [
                event
                for event in s.events.values()
                if event["created"] >= int(created_gte)
                and event.get("account") == stripe_account
                and (wanted is None or event["type"] in wanted)
            ]
            return found[::-1]

        params = {
            "created_gte": created_gte,
            "types": list(types) if types else None,
            "stripe_account": stripe_account,
        }
        return iter(s.execute("list_events", params, action))

    def verify_webhook(
        self,
        payload: bytes,
        sig_header: str | None,
        secrets: Sequence[str],
        tolerance: int,
    ) -> dict[str, Any]:
        """Verify ``Stripe-Signature`` like the Stripe gateway does.

        When no secret is configured (``secrets`` empty), the simulated
        gateway's own :data:`SIMULATED_WEBHOOK_SECRET` is accepted instead, so a
        development host needs no ``whsec_`` setting.
        """
        if isinstance(secrets, str):
            raise TypeError("secrets must be a sequence of signing secrets, not a single string")
        usable = [secret for secret in secrets if secret and secret.strip()]
        return verify_webhook_payload(
            payload, sig_header, usable or [SIMULATED_WEBHOOK_SECRET], tolerance
        )
