"""Shared set-up for the onboarding tests: the simulated Stripe, the people of
a marketplace (a doer, an organization with an admin and a plain member, a
stranger) and helpers that call the onboarding API the way a browser does.

Every test that uses the simulated Stripe runs twice, once per Stripe
Accounts API (``ACCOUNTS_API`` "v1" and "v2", the ``accounts_api``
parameter): hosts and the API must see no difference. A test about one API's
own requests or events is marked ``@pytest.mark.accounts_api("v1")``.

Events the simulated Stripe emits are *collected*, not applied: these tests
decide when the account is synced (``?refresh=1``, the return page, or the
service functions the webhook handlers call). ``test_webhook_sync.py`` runs
the real webhook pipeline instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from django_escrow_connect import signals, swappable
from django_escrow_connect import simulation as simulated
from django_escrow_connect.simulation import EventCollector, SimulatedGateway
from tests import factories

SIMULATED_GATEWAY = "django_escrow_connect.simulation.SimulatedGateway"
#: Both Stripe Accounts APIs the package creates accounts with.
ACCOUNTS_APIS = ("v1", "v2")
#: The thin-event destination's secret in these tests.
THIN_SECRET = "whsec_thin_test_secret"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses the simulated Stripe once per Accounts API."""
    if "accounts_api" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("accounts_api")
    metafunc.parametrize("accounts_api", marker.args if marker else ACCOUNTS_APIS)


def configure(settings: Any, **overrides: Any) -> None:
    settings.ESCROW_CONNECT = {
        **settings.ESCROW_CONNECT,
        "GATEWAY": SIMULATED_GATEWAY,
        **overrides,
    }


@pytest.fixture
def stripe_events() -> Iterator[EventCollector]:
    collector = EventCollector()
    previous = simulated.set_event_sink(collector)
    yield collector
    simulated.set_event_sink(previous)


@pytest.fixture
def sim_stripe(
    settings: Any, stripe_events: EventCollector, accounts_api: str
) -> Iterator[simulated.SimulatedStripe]:
    """The simulated Stripe, empty, as the package's gateway, in ``accounts_api`` mode."""
    configure(settings, ACCOUNTS_API=accounts_api, THIN_WEBHOOK_SECRETS=[THIN_SECRET])
    simulated.reset()
    yield simulated.simulated_stripe
    simulated.reset()


@pytest.fixture
def seller(sim_stripe: Any) -> SimulatedGateway:
    """The simulated Stripe's side of things: finish onboarding, deauthorize..."""
    return SimulatedGateway()


def url(name: str, **query: Any) -> str:
    path = reverse(f"escrow_connect:{name}")
    if query:
        from urllib.parse import urlencode

        path += "?" + urlencode(query)
    return path


def client_for(user: Any = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def accounts() -> Any:
    return swappable.load("ConnectedAccount")._default_manager


def calls(sim_stripe: Any) -> list[str]:
    return [name for name, _ in sim_stripe.calls]


@dataclass
class People:
    owner: Any
    admin: Any
    member: Any
    stranger: Any
    organization: Any


@pytest.fixture
def people(db: Any) -> People:
    admin = factories.make_user("admin")
    member = factories.make_user("member")
    organization = factories.make_organization(admins=(admin,), members=(member,))
    return People(
        owner=factories.make_user("doer"),
        admin=admin,
        member=member,
        stranger=factories.make_user("stranger"),
        organization=organization,
    )


class SignalLog:
    """Every account signal sent, as ``(name, kwargs)``."""

    NAMES = (
        "account_updated",
        "account_requirements_due",
        "capability_restricted",
        "account_deauthorized",
    )

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._receivers: list[tuple[Any, Any]] = []
        for name in self.NAMES:

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                kwargs.pop("signal", None)
                self.sent.append((_name, kwargs))

            signal = getattr(signals, name)
            signal.connect(receiver, weak=False)
            self._receivers.append((signal, receiver))

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for sent, kwargs in self.sent if sent == name]

    def clear(self) -> None:
        self.sent.clear()

    def disconnect(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)


@pytest.fixture
def signal_log() -> Iterator[SignalLog]:
    log = SignalLog()
    yield log
    log.disconnect()
