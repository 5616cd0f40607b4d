"""Stripe's test cards the simulated customer pays with, and what each does."""

from __future__ import annotations

from typing import NamedTuple


class SimulatedCard(NamedTuple):
    """A test card number and what paying with it does (for a checkout page)."""

    number: str
    label: str


#: The cards :meth:`SimulatedGateway.confirm_payment_intent` understands, by name.
CARDS: dict[str, SimulatedCard] = {
    "success": SimulatedCard("4242424242424242", "Visa - payment succeeds"),
    "declined": SimulatedCard("4000000000000002", "Visa - declined (generic_decline)"),
    "authentication_required": SimulatedCard(
        "4000002500003155", "Visa - requires 3-D Secure authentication"
    ),
    "disputed": SimulatedCard(
        "4000000000000259", "Visa - succeeds, then the customer disputes it as fraudulent"
    ),
    # Stripe's "Simulate an asynchronous refund" cards: every other card's
    # refunds succeed at once.
    "refund_pending": SimulatedCard(
        "4000000000007726", "Visa - succeeds; a refund is pending, then succeeds"
    ),
    "refund_fails": SimulatedCard(
        "4000000000005126", "Visa - succeeds; a refund succeeds, then fails"
    ),
}
#: Cards whose charge succeeds (the others decline or ask for authentication).
_PAYING_SCENARIOS = ("success", "disputed", "refund_pending", "refund_fails")
_SCENARIO_BY_NUMBER = {card.number: name for name, card in CARDS.items()}
