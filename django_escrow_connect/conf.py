"""The package's one settings object.

Hosts configure everything through a single ``ESCROW_CONNECT`` dict setting,
modelled on DRF's ``api_settings``: every key has a documented default, values
named in :data:`IMPORT_STRINGS` are dotted paths imported lazily on first use,
and the cache is dropped on ``setting_changed`` so ``override_settings`` works
in tests.

Model settings are *not* in this dict: swapper reads them from top-level
settings (``ESCROW_CONNECT_TASK_MODEL`` and friends) because Django needs them
while it loads models, before this object could be consulted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

__all__ = [
    "ACCOUNTS_APIS",
    "ACCOUNTS_V1",
    "ACCOUNTS_V2",
    "DEFAULTS",
    "ESCROW_STRATEGIES",
    "FUND_NEXT_MILESTONE_RULES",
    "MANUAL_CAPTURE",
    "SEPARATE_CHARGES_AND_TRANSFERS",
    "STRIPE_API_VERSION",
    "EscrowSettings",
    "escrow_settings",
]

SETTING_NAME = "ESCROW_CONNECT"

#: The Stripe API version every request pins. Webhook endpoints should be
#: created with the same version so event payloads match what the code parses.
STRIPE_API_VERSION = "2026-10-28.endive"

SEPARATE_CHARGES_AND_TRANSFERS = "separate_charges_and_transfers"
MANUAL_CAPTURE = "manual_capture"
ESCROW_STRATEGIES = (SEPARATE_CHARGES_AND_TRANSFERS, MANUAL_CAPTURE)

#: ``FUND_NEXT_MILESTONE`` values: when milestone k of terms funded per
#: milestone may be paid for (k-1 held, k-1 released, or in any order).
FUND_NEXT_MILESTONE_RULES = ("when_held", "on_release", "any_time")

#: ``ACCOUNTS_API`` values: Stripe's Accounts v1 (``/v1/accounts``) or v2 (``/v2/core/accounts``).
ACCOUNTS_V1 = "v1"
ACCOUNTS_V2 = "v2"
ACCOUNTS_APIS = (ACCOUNTS_V1, ACCOUNTS_V2)

DEFAULTS: dict[str, Any] = {
    # --- Stripe credentials and transport -------------------------------
    "STRIPE_SECRET_KEY": "",
    "STRIPE_PUBLISHABLE_KEY": "",
    # None means Stripe's own https://api.stripe.com; set it to point the
    # gateway at stripe-mock or a local emulator.
    "STRIPE_API_BASE": None,
    # StripeClient does not retry unless told to; it then retries connection
    # errors, 409, 5xx and Stripe-Should-Retry, reusing the idempotency key.
    "STRIPE_MAX_NETWORK_RETRIES": 2,
    "STRIPE_TIMEOUT": 30,
    # Which gateway implementation talks to Stripe (the simulated gateway is
    # for development and demos only; a system check refuses it with DEBUG off).
    "GATEWAY": "django_escrow_connect.gateway.stripe_gateway.StripeGateway",
    # Starts every idempotency key. Give each installation that shares one
    # Stripe account (staging and a laptop on the same sk_test_ key) its own,
    # before first use: equal keys would make Stripe replay one install's
    # answer to the other.
    "IDEMPOTENCY_KEY_PREFIX": "escrow-connect",
    # How long a money call may still be running in the process that sent
    # it (None: STRIPE_TIMEOUT x (STRIPE_MAX_NETWORK_RETRIES + 1) + 30 s).
    # Until then no other request concludes that the call never happened.
    "MONEY_OPERATION_LEASE_SECONDS": None,
    # Where the simulated gateway delivers its signed events: a callable
    # (endpoint, payload, signature_header) -> response. Named here so the
    # simulation (a gateway) never imports the webhook layer above it.
    "SIMULATED_EVENT_RECEIVER": "django_escrow_connect.webhooks.receiver.receive",
    # --- Webhooks -----------------------------------------------------------
    # Lists, so a secret can be rotated: any one of them may match.
    "WEBHOOK_SECRETS": [],
    "CONNECT_WEBHOOK_SECRETS": [],
    # The event destination that delivers thin events (Accounts v2 changes:
    # ``v2.core.account...``) to ``stripe/webhook/thin/``; its own secrets.
    "THIN_WEBHOOK_SECRETS": [],
    "WEBHOOK_TOLERANCE_SECONDS": 300,
    "WEBHOOK_MAX_BODY_BYTES": 512 * 1024,
    # "sync" processes an event in the request; "task" enqueues it through
    # Django's tasks framework (django.tasks / the django-tasks backport).
    "WEBHOOK_PROCESSING": "sync",
    # Task mode: how many times a worker processes a failing event (the first
    # try included) before leaving it ``failed`` for escrow_replay_events, and
    # the first retry's delay in seconds (it doubles on each retry). Needs a
    # task backend that can defer (django-tasks-db, the Celery adapter).
    "WEBHOOK_TASK_MAX_ATTEMPTS": 5,
    "WEBHOOK_TASK_RETRY_DELAY": 30,
    # Task mode: escrow_requeue_stuck_events enqueues again the events still
    # ``received`` this many minutes after they arrived (a lost queue message).
    "WEBHOOK_REQUEUE_AFTER_MINUTES": 15,
    "WEBHOOK_PAYLOAD_RETENTION_DAYS": 90,
    # The API version your webhook endpoints are set to in the Stripe
    # dashboard, when it is not STRIPE_API_VERSION (empty: it is). A system
    # check (W025) warns while they differ; see docs/webhooks.md.
    "WEBHOOK_API_VERSION": "",
    # --- Escrow -------------------------------------------------------------
    "ESCROW_STRATEGY": SEPARATE_CHARGES_AND_TRANSFERS,
    "DEFAULT_CURRENCY": "usd",
    # Platform fee: the default policy charges basis points of the amount
    # (1000 = 10 %) plus a fixed fee per currency in minor units.
    "PLATFORM_FEE_BASIS_POINTS": 1000,
    "PLATFORM_FEE_FIXED": {},
    "PLATFORM_FEE_POLICY": "django_escrow_connect.fees.default_fee_policy",
    # Where the amount, currency and parties of a payment come from: a
    # callable taking the task (never the request).
    "PAYMENT_TERMS": "django_escrow_connect.terms.terms_from_task",
    # Refunds beyond what a split payment still holds: how much of which
    # payee's transfer is reversed (latest release first, payees in proportion).
    "REVERSAL_POLICY": "django_escrow_connect.terms.proportional_reversals",
    # None: payments are released only when the customer (or staff) confirms.
    "AUTO_RELEASE_AFTER_DAYS": None,
    # Terms funded per milestone (docs/milestones.md): when the customer may
    # pay for milestone k. "when_held": once milestone k-1's payment is held
    # (or further on); "on_release": once milestone k-1 is released;
    # "any_time": in any order.
    "FUND_NEXT_MILESTONE": "when_held",
    # Manual-capture holds: warn this many hours before capture_before, and
    # what the expiry command does with a hold about to lapse.
    "CAPTURE_EXPIRY_WARNING_HOURS": 48,
    "CAPTURE_EXPIRY_ACTION": "warn",
    # A payment held or releasing longer than this is reported as stuck.
    "STUCK_PAYMENT_HOURS": 72,
    # Manual capture only: send on_behalf_of=<connected account> on the
    # PaymentIntent, making the doer the settlement merchant. Stripe requires
    # it for destination charges to an account in another region; the account
    # then needs card_payments (the full service agreement).
    "DESTINATION_ON_BEHALF_OF": False,
    # --- Tips (docs/tips.md) ----------------------------------------------------
    # The largest tip per currency, in that currency's minor units
    # ({"usd": 10000, "jpy": 10000}); a payment in a currency without an
    # entry takes no tips. Empty (the default): tips are off.
    "TIP_MAX_AMOUNT": {},
    # The smallest charge per currency, in its minor units, where it is not
    # Stripe's table (money.MIN_CHARGE_AMOUNTS): Stripe applies its minimum
    # in the currency the platform settles in, e.g. {"usd": 70} for USD
    # charges settled in GBP. Merged over the table; checked before a price
    # or a tip is written.
    "MIN_CHARGE_AMOUNTS": {},
    # Callable(amount, currency) -> int: what the platform keeps of a tip.
    "TIP_FEE": "django_escrow_connect.fees.no_tip_fee",
    # Whether a payer may ask to save the payment's card for later
    # off-session charges (tips). Off by default: the host must show the
    # consent text Stripe requires for off-session use (docs/tips.md).
    "SAVE_PAYMENT_METHODS": False,
    # --- Connect onboarding -------------------------------------------------
    "ONBOARDING_RETURN_URL": "",
    "ONBOARDING_REFRESH_URL": "",
    # What Stripe-hosted onboarding (AccountLinks) asks for: "currently_due"
    # (Stripe's default), or "eventually_due" to collect everything Stripe
    # will need, so doers are not sent back to onboarding again later.
    "ONBOARDING_COLLECT": "currently_due",
    # "include" also collects future_requirements (what Stripe will ask for
    # after an announced rule change); "omit" is Stripe's default.
    "ONBOARDING_FUTURE_REQUIREMENTS": "omit",
    # The Connect embedded components POST stripe/account-session/ may enable
    # (django_escrow_connect.embedded lists them), and per component the
    # features to send, over the package's safe defaults.
    "EMBEDDED_COMPONENTS": ["account_onboarding"],
    "EMBEDDED_COMPONENT_FEATURES": {},
    "DEFAULT_ACCOUNT_COUNTRY": "US",
    # Which Stripe API creates new connected accounts: "v1" (/v1/accounts
    # with controller properties, the behaviour of every release so far) or
    # "v2" (/v2/core/accounts with the recipient configuration; Stripe's
    # advice for new platforms). Existing accounts keep the API they were
    # created with. See docs/onboarding.md, "Accounts v1 or v2".
    "ACCOUNTS_API": "v1",
    # Callable(owner) -> {"country": ..., "email": ...} for a new account;
    # it may also return "service_agreement" ("full"/"recipient") and
    # "capabilities" (names to request) to override the strategy's defaults.
    "ACCOUNT_OWNER_DETAILS": "django_escrow_connect.accounts.default_owner_details",
    # Callable(user, organization) -> bool: may this user manage the
    # organization's connected account and see its payments?
    "ORGANIZATION_ADMIN_PREDICATE": (
        "django_escrow_connect.permissions.deny_all_organization_admins"
    ),
    # Callable(user) -> QuerySet of the organizations the user administers:
    # the same rule as ORGANIZATION_ADMIN_PREDICATE, in SQL. With it a single
    # payment is looked up in one scoped query whoever the payee is (no
    # timing difference for organization payees); None: found, then asked.
    "ADMINISTERED_ORGANIZATIONS": None,
    # --- Notifications ------------------------------------------------------
    "NOTIFICATION_BACKENDS": [
        "django_escrow_connect.notifications.backends.LoggingBackend",
    ],
    # Django 6.1+: the MAILERS alias EmailBackend sends with (None: the
    # default mailer).
    "EMAIL_MAILER": None,
    # Callable(user) -> language code or None: the language EmailBackend
    # writes to that user in; None falls back to settings.LANGUAGE_CODE.
    "RECIPIENT_LANGUAGE": "django_escrow_connect.notifications.backends.user_language",
    # Observability: spans and metrics through OpenTelemetry when
    # opentelemetry-api is installed; False turns them off.
    "OPENTELEMETRY": True,
}

#: Keys whose values are dotted paths (or lists of them), imported lazily.
IMPORT_STRINGS = frozenset(
    {
        "GATEWAY",
        "SIMULATED_EVENT_RECEIVER",
        "PLATFORM_FEE_POLICY",
        "TIP_FEE",
        "PAYMENT_TERMS",
        "REVERSAL_POLICY",
        "ACCOUNT_OWNER_DETAILS",
        "ORGANIZATION_ADMIN_PREDICATE",
        "ADMINISTERED_ORGANIZATIONS",
        "NOTIFICATION_BACKENDS",
        "RECIPIENT_LANGUAGE",
    }
)


def perform_import(value: Any, setting_name: str) -> Any:
    """Import a dotted path, or each of a list of them; pass objects through."""
    if value is None:
        return None
    if isinstance(value, str):
        return _import(value, setting_name)
    if isinstance(value, (list, tuple)):
        return [_import(item, setting_name) if isinstance(item, str) else item for item in value]
    return value


def _import(path: str, setting_name: str) -> Any:
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImportError(
            f"Could not import {path!r} for {SETTING_NAME}[{setting_name!r}]: {exc}"
        ) from exc


class EscrowSettings:
    """Attribute access to ``settings.ESCROW_CONNECT`` merged over DEFAULTS.

    ``escrow_settings.GATEWAY`` returns the imported class, not the string; the
    raw configured value is available through :meth:`raw`.
    """

    def __init__(self, user_settings: dict[str, Any] | None = None) -> None:
        self._explicit = user_settings
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        if self._explicit is not None:
            return self._explicit
        return getattr(settings, SETTING_NAME, None) or {}

    def raw(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid {SETTING_NAME} setting: {name!r}")
        return self.user_settings.get(name, DEFAULTS[name])

    def is_set(self, name: str) -> bool:
        return name in self.user_settings

    def __getattr__(self, name: str) -> Any:
        value = self.raw(name)
        if name in IMPORT_STRINGS:
            value = perform_import(value, name)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._cached:
            self.__dict__.pop(name, None)
        self._cached.clear()

    def unknown_keys(self) -> Iterable[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))


escrow_settings = EscrowSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        escrow_settings.reload()


setting_changed.connect(_reload)


def live_mode_configured() -> bool:
    """Whether the configured secret key is a live one (``sk_live_`` / ``rk_live_``)."""
    key = escrow_settings.STRIPE_SECRET_KEY or ""
    return isinstance(key, str) and key.startswith(("sk_live_", "rk_live_"))
