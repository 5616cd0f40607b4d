"""The requests the services send, built by the services' own functions.

The gateway's cassette tests must send what the package really sends, or a
cassette could replay a request no service makes (``metadata[payment_id]``
where the services write ``metadata[escrow_payment_id]``, a ``capture_method``
they never use). So each test builds its call from the function the journal
uses (``payment_intent_request``, ``transfer_request``, ``refund_request``...)
and sends it the way ``services.operations.send`` does. A change to a
service's request is a cassette miss here until the cassette is updated.

The stand-in rows carry only what those functions read; their ids and
amounts are the ones the cassettes were written for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django_escrow_connect.conf import MANUAL_CAPTURE, SEPARATE_CHARGES_AND_TRANSFERS
from django_escrow_connect.services import accounts, operations
from django_escrow_connect.services.common import idempotency_key
from django_escrow_connect.states import MoneyOperationKind

K = MoneyOperationKind

ACCOUNT = "acct_1QzR8tQm5HwJ3uVe"


@dataclass
class StandInPayment:
    """The fields of an ``EscrowPayment`` the request functions read."""

    pk: uuid.UUID
    task_id: int
    amount: int
    currency: str
    strategy: str
    platform_fee: int
    stripe_payment_intent_id: str = ""
    stripe_charge_id: str = ""
    destination_account_id: str = ACCOUNT
    # Saved payment methods (services.saved_methods).
    payer_id: int = 7
    payment_method_consent_at: Any = None
    stripe_customer_id: str = ""
    saved_payment_method_id: str = ""
    # Money on the platform's balance after a refund after release failed
    # (outcomes.refund_request sends a destination charge's refund of it
    # without reversing the doer again): none in these requests.
    amount_held: int = 0

    @property
    def off_session_payment_method(self) -> str:
        consented = self.payment_method_consent_at is not None and self.stripe_customer_id
        return self.saved_payment_method_id if consented else ""

    @property
    def transfer_group(self) -> str:
        # As services.payments._new_payment names it.
        return f"escrow_{self.pk.hex}"

    @property
    def is_manual_capture(self) -> bool:
        return self.strategy == MANUAL_CAPTURE

    def key(self, kind: str, attempt: int = 0) -> str:
        """The operation's idempotency key (``operations.next_key``)."""
        return idempotency_key("payment", self.pk, operations.KEY_WORDS[kind], attempt)


#: Separate charges and transfers: charged on the platform, released by a transfer.
SEPARATE = StandInPayment(
    pk=uuid.UUID("3b2f6a1c-8d4e-5f7a-9b0c-1d2e3f4a5b6c"),
    task_id=58,
    amount=12500,
    currency="usd",
    strategy=SEPARATE_CHARGES_AND_TRANSFERS,
    platform_fee=1250,
    stripe_payment_intent_id="pi_3QzSaBPk9xR2vLq70aH4nM2c",
    stripe_charge_id="ch_3QzSaBPk9xR2vLq70b7TeY5d",
)
#: A destination charge held by manual capture.
DESTINATION = StandInPayment(
    pk=uuid.UUID("7c1d2e3f-4a5b-5c6d-8e7f-9a0b1c2d3e4f"),
    task_id=59,
    amount=20000,
    currency="usd",
    strategy=MANUAL_CAPTURE,
    platform_fee=2030,
    stripe_payment_intent_id="pi_3QzSdKPk9xR2vLq71Fq8ZsWb",
    stripe_charge_id="ch_3QzSdKPk9xR2vLq71Gm4YvNx",
)
#: The same with ``DESTINATION_ON_BEHALF_OF``.
ON_BEHALF_OF = StandInPayment(
    pk=uuid.UUID("9e8d7c6b-5a4f-5e3d-8c2b-1a0f9e8d7c6b"),
    task_id=60,
    amount=20000,
    currency="usd",
    strategy=MANUAL_CAPTURE,
    platform_fee=2030,
    stripe_payment_intent_id="pi_3QzSfRPk9xR2vLq72Hc4YtNe",
)
#: A hold whose capture the card issuer declines.
DECLINED = StandInPayment(
    pk=uuid.UUID("2a3b4c5d-6e7f-5a8b-9c0d-1e2f3a4b5c6d"),
    task_id=61,
    amount=8000,
    currency="usd",
    strategy=MANUAL_CAPTURE,
    platform_fee=800,
    stripe_payment_intent_id="pi_3QzXh2Pk9xR2vLq71Wd5Kc8T",
)
#: A payment below Stripe's minimum charge amount.
TOO_SMALL = StandInPayment(
    pk=uuid.UUID("4d5e6f7a-8b9c-5d0e-9f1a-2b3c4d5e6f7a"),
    task_id=62,
    amount=30,
    currency="usd",
    strategy=SEPARATE_CHARGES_AND_TRANSFERS,
    platform_fee=3,
)

#: A payment whose payer agreed to save the card: Customer, then the PaymentIntent.
SAVING = StandInPayment(
    pk=uuid.UUID("5d6e7f8a-9b0c-5d1e-8f2a-3b4c5d6e7f8a"),
    task_id=63,
    amount=12500,
    currency="usd",
    strategy=SEPARATE_CHARGES_AND_TRANSFERS,
    platform_fee=1250,
    stripe_payment_intent_id="pi_3RbK2mPk9xR2vLq70Sv4Hc8D",
    payment_method_consent_at=datetime(2026, 11, 8, 9, 0, tzinfo=timezone.utc),
    stripe_customer_id="cus_RbK1xQm7Tz4Wdn",
    saved_payment_method_id="pm_1RbK3nPk9xR2vLq7Yt5Ue2Fq",
)
CUSTOMER = "cus_RbK1xQm7Tz4Wdn"


@dataclass
class StandInTip:
    """The fields of an ``EscrowTip`` ``tip_intent_request`` reads."""

    pk: uuid.UUID
    payment: StandInPayment
    amount: int
    currency: str = "usd"

    @property
    def payment_id(self) -> uuid.UUID:
        return self.payment.pk

    @property
    def transfer_group(self) -> str:
        return f"escrow_tip_{self.pk.hex}"

    @property
    def intent_idempotency_key(self) -> str:
        return idempotency_key("tip", self.pk, "intent", 0)


#: A tip on SAVING, charged on the saved card off-session.
OFF_SESSION_TIP = StandInTip(
    pk=uuid.UUID("8f9a0b1c-2d3e-5f4a-8b5c-6d7e8f9a0b1c"), payment=SAVING, amount=500
)
#: The same on a card Stripe wants authenticated (pm_card_authenticationRequired).
AUTHENTICATION_TIP = StandInTip(
    pk=uuid.UUID("1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"),
    payment=StandInPayment(
        **{**SAVING.__dict__, "saved_payment_method_id": "pm_1RbK5pPk9xR2vLq7Qw8Er3Ty"}
    ),
    amount=300,
)

#: The first transfer of SEPARATE (what its release made).
TRANSFER = "tr_1QzTfGPk9xR2vLq7sD4kXq2L"
DESCRIPTION = "Task #59: garden clean-up"


def send(gateway: Any, kind: str, request: dict[str, Any], *, key: str, target: str = "") -> Any:
    """Phase 2 of an operation (``operations.send``) on this gateway."""
    args = operations.call_arguments(kind, target)
    return operations.gateway_method(kind, gateway)(*args, idempotency_key=key, **request)


@dataclass
class StandInAccount:
    """The fields of a ``ConnectedAccount`` row ``creation_request`` reads."""

    owner_user_id: int | None
    owner_organization_id: int | None = None
    country: str = "US"
    email: str = "maria.lopez@example.com"
    business_type: str = "individual"

    @property
    def creation_idempotency_key(self) -> str:
        # As services.accounts._get_or_create_row makes it.
        owner = (
            f"user:{self.owner_user_id}"
            if self.owner_user_id is not None
            else f"organization:{self.owner_organization_id}"
        )
        return idempotency_key("account-owner", owner, "create", 0)


def create_account_v2(gateway: Any, account: StandInAccount) -> Any:
    """The same call with ``ACCOUNTS_API = "v2"`` (``services.accounts.creation_request_v2``)."""
    configuration = accounts.account_configuration(object())
    return gateway.create_account_v2(
        idempotency_key=account.creation_idempotency_key,
        **accounts.creation_request_v2(account, configuration),
    )


def create_account(gateway: Any, account: StandInAccount) -> Any:
    """``services.accounts._create_at_stripe``'s call, with the strategy's configuration."""
    configuration = accounts.account_configuration(object())
    return gateway.create_account(
        idempotency_key=account.creation_idempotency_key,
        **accounts.creation_request(account, configuration),
    )
