"""A tip through the real :class:`StripeGateway`, replayed from a hand-authored
cassette (``tests/cassettes/payments/tip_separate_charges_and_transfers.yaml``).

The payment is created, paid and released as in the lifecycle cassette; then
the customer tips: the tip's own PaymentIntent, read back once paid (the way a
lost webhook is recovered: ``escrow_reconcile``), its charge read for refunds
whose events were lost, and its transfer, sourced from the tip's charge, in
the tip's own transfer group.
"""

from __future__ import annotations

import pytest

from django_escrow_connect import swappable
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS

from .test_stripe_cassettes import (  # noqa: F401 (fixtures)
    Lifecycle,
    payment,
    real_gateway,
    strategy_setting,
    vcr_cassette_dir,
    vcr_config,
)


@pytest.mark.vcr
@pytest.mark.default_cassette("tip_separate_charges_and_transfers")
def test_a_tip_is_charged_and_transferred(
    db,
    settings,
    real_gateway,  # noqa: F811
    vcr,
    django_capture_on_commit_callbacks,
):
    strategy_setting(settings, SEPARATE_CHARGES_AND_TRANSFERS)
    settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "TIP_MAX_AMOUNT": {"usd": 5_000}}
    life = Lifecycle(django_capture_on_commit_callbacks)
    created = life.post(life.customer, "/escrow/payments/create/", {"task_id": str(life.task.pk)})
    payment_id = created.json()["payment_id"]
    life.reconcile(payment_id)
    released = life.post(life.customer, f"/escrow/payments/confirm/{payment_id}/")
    assert released.json()["status"] == "released"

    tipped = life.post(life.customer, f"/escrow/payments/{payment_id}/tips/", {"amount": 500})
    assert tipped.status_code == 201, tipped.content
    body = tipped.json()
    assert body["client_secret"] == "pi_3RaE1gPk9xR2vLq71Tp5Gk7a_secret_Wd2Nc5RvQx8LmZ3kTb7HyP1Js"
    tip = swappable.load("EscrowTip").objects.get(pk=body["id"])
    assert tip.stripe_payment_intent_id == "pi_3RaE1gPk9xR2vLq71Tp5Gk7a"

    # The customer paid the tip in the browser; the PaymentIntent says so.
    life.reconcile(payment_id)
    tip.refresh_from_db()
    assert tip.status == "transferred"
    assert tip.stripe_charge_id == "ch_3RaE1gPk9xR2vLq71Hm4Qs8c"
    (transfer,) = tip.transfers.all()
    assert transfer.stripe_transfer_id == "tr_1RaE3hPk9xR2vLq7Zb6Nd4Vw"
    assert transfer.amount == 500
    assert payment(payment_id).amount_transferred == 9_000  # the payment's own, unchanged

    assert tip.amount_refunded == 0
    assert vcr.play_count == 7
    assert vcr.all_played
