"""The webhook tests' fixtures, for the benchmark diagnoses measured on real deliveries."""

from tests.webhooks.conftest import (  # noqa: F401 - fixtures used here
    deliver,
    make_payment,
    sim_stripe,
)
