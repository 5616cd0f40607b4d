"""The payment suite's simulated Stripe and marketplace, for the admin's actions."""

from tests.payments.conftest import market, sim_stripe  # noqa: F401
from tests.webhooks.conftest import deliver  # noqa: F401
