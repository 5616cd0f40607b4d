"""A simulated Stripe Connect that moves no money: for development, demos and tests.

Like Django's locmem e-mail backend. :class:`SimulatedGateway` implements
:class:`~django_escrow_connect.gateway.base.PaymentGateway` against an
in-memory, process-wide, thread-safe store (:data:`simulated_stripe`, a
:class:`SimulatedStripe`) of Stripe-shaped JSON objects (API version
``2026-10-28.endive``), and parses every answer with the ``from_dict`` of
:mod:`django_escrow_connect.gateway.types`, exactly as the real gateway does.

What it simulates:

- Stripe's rules that the escrow flow depends on: idempotency keys (replay,
  or :class:`~django_escrow_connect.exceptions.IdempotencyConflict` when
  reused with other parameters), transfers limited by their
  ``source_transaction`` charge and by the destination's ``transfers``
  capability, refund and reversal limits, authorisations that lapse after
  seven days (:meth:`SimulatedStripe.advance_time`);
- the other parties (:mod:`.actions`): a customer paying with test cards
  (:data:`CARDS`, :meth:`SimulatedGateway.confirm_payment_intent`,
  :meth:`SimulatedGateway.complete_authentication`), a seller onboarding
  (:meth:`SimulatedGateway.complete_onboarding`), disputes, payouts and
  deauthorisation;
- webhooks (:mod:`.events`): every change emits a full Stripe Event, signed
  with the endpoint's secret and handed to an *event sink*
  (:func:`set_event_sink`; by default the receiver
  ``ESCROW_CONNECT["SIMULATED_EVENT_RECEIVER"]`` names), after the
  surrounding database transaction commits;
- failures, for tests: :meth:`SimulatedStripe.fail_next` makes the next call
  of a method raise, before or after it took effect; :attr:`SimulatedStripe.calls`
  records every call the application made.

Its state can be saved and loaded as JSON-able data (:func:`dump_state`,
:func:`load_state`), and its pages (Stripe-hosted onboarding, the Express
dashboard, the 3-D Secure challenge) are views a host can include
(:mod:`.urls`).

Modules, by role: :mod:`.store` (state, clock, idempotency, faults),
:mod:`.objects` (Stripe object builders), :mod:`.rules` (Stripe's limits and
checks), :mod:`.movements` (what moving money does to the objects),
:mod:`.gateway` with :mod:`.accounts`, :mod:`.payments`, :mod:`.transfers`
(the protocol methods), :mod:`.actions`, :mod:`.events`, :mod:`.cards`.

This package must not import ``stripe``.
"""

from __future__ import annotations

from .cards import CARDS, SimulatedCard
from .events import (
    CONNECT_ENDPOINT,
    PLATFORM_ENDPOINT,
    SIMULATED_WEBHOOK_SECRET,
    Delivery,
    EventCollector,
    EventSink,
    ReceiverUnavailable,
    UndeliveredEvent,
    default_event_sink,
    event_endpoint,
    get_event_sink,
    set_event_sink,
    signing_secret,
)
from .gateway import SimulatedGateway
from .links import dashboard_url, onboarding_url
from .rules import (
    ACCOUNT_SESSION_COMPONENTS,
    DISPUTE_FEE,
    PACKAGE_CONTROLLER,
    same_region,
)
from .store import (
    GATEWAY_METHODS,
    SIMULATION_METHODS,
    SimulatedStripe,
    dump_state,
    load_state,
    reset,
    simulated_stripe,
)

__all__ = [
    "ACCOUNT_SESSION_COMPONENTS",
    "CARDS",
    "CONNECT_ENDPOINT",
    "DISPUTE_FEE",
    "GATEWAY_METHODS",
    "PACKAGE_CONTROLLER",
    "PLATFORM_ENDPOINT",
    "SIMULATED_WEBHOOK_SECRET",
    "SIMULATION_METHODS",
    "Delivery",
    "EventCollector",
    "EventSink",
    "ReceiverUnavailable",
    "SimulatedCard",
    "SimulatedGateway",
    "SimulatedStripe",
    "UndeliveredEvent",
    "dashboard_url",
    "default_event_sink",
    "dump_state",
    "event_endpoint",
    "get_event_sink",
    "load_state",
    "onboarding_url",
    "reset",
    "same_region",
    "set_event_sink",
    "signing_secret",
    "simulated_stripe",
]
