"""The books audit runs against the simulated Stripe with every webhook
delivered through the package's real receiver (the reliability suite's
``stripe`` fixture): the app's books are then as complete as production's,
and any divergence the tests see is one they made on purpose.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.payments.conftest import STRATEGIES, Marketplace, configure, market  # noqa: F401
from tests.reliability.conftest import sim_stripe  # noqa: F401


@pytest.fixture(params=STRATEGIES)
def strategy(request: pytest.FixtureRequest, settings: Any, sim_stripe: Any) -> str:  # noqa: F811
    """Run the test once per escrow strategy."""
    configure(settings, ESCROW_STRATEGY=request.param)
    return str(request.param)
