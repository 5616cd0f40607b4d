"""Each StripeGateway call sends the request Stripe expects and returns plain types.

Every test replays a hand-authored cassette. A cassette only answers a request
with the same method, path, query, form body, ``Idempotency-Key``,
``Stripe-Version`` and ``Stripe-Account``; anything else is a cassette miss and
the test fails. ``vcr.play_count`` proves the request was actually sent.

The calls are the ones the services make: their arguments come from the
services' own request functions (see ``service_requests``), so a service
that changes what it sends no longer matches its cassette here.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from django_escrow_connect.conf import MANUAL_CAPTURE, escrow_settings
from django_escrow_connect.exceptions import CardDeclined
from django_escrow_connect.gateway import (
    AccountLinkResult,
    AccountSessionResult,
    AccountSnapshot,
    ChargeSnapshot,
    CustomerSnapshot,
    DisputeSnapshot,
    LoginLinkResult,
    PaymentIntentSnapshot,
    PaymentMethodSnapshot,
    RefundSnapshot,
    TransferReversalSnapshot,
    TransferSnapshot,
)
from django_escrow_connect.gateway.stripe_gateway import StripeGateway
from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.services.outcomes import refund_request
from django_escrow_connect.services.payments import (
    VOID_REQUEST,
    capture_request,
    payment_intent_request,
    reversal_request,
    transfer_request,
)
from django_escrow_connect.services.saved_methods import customer_request
from django_escrow_connect.services.tip_outcomes import tip_intent_request
from django_escrow_connect.states import MoneyOperationKind as K
from django_escrow_connect.states import WebhookEndpoint
from django_escrow_connect.webhooks import registry

from .service_requests import (
    ACCOUNT,
    AUTHENTICATION_TIP,
    CUSTOMER,
    DESCRIPTION,
    DESTINATION,
    OFF_SESSION_TIP,
    ON_BEHALF_OF,
    SAVING,
    SEPARATE,
    TRANSFER,
    StandInAccount,
    create_account,
    create_account_v2,
    send,
)


def utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def assert_sent_once(cassette) -> None:
    assert cassette.play_count == 1
    assert cassette.all_played


class TestAccountsV2:
    """``ACCOUNTS_API = "v2"``: /v2/core requests (JSON bodies), answers mapped onto v1's fields."""

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_v2_create")
    def test_create_sends_the_recipient_configuration_and_the_owners_key(self, gateway, vcr):
        account = create_account_v2(gateway, StandInAccount(owner_user_id=42))

        assert_sent_once(vcr)
        assert isinstance(account, AccountSnapshot)
        assert account.id == ACCOUNT
        assert account.country == "US"
        assert account.business_type == "individual"
        assert account.email == "maria.lopez@example.com"
        assert account.capabilities == {"transfers": "inactive"}
        assert not account.transfers_active
        assert account.payouts_enabled is False
        assert account.charges_enabled is False
        assert account.details_submitted is False
        assert "identity.individual.dob" in account.currently_due
        assert account.past_due == account.currently_due
        assert account.disabled_reason == "requirements.past_due"
        assert account.metadata == {"escrow_owner": "user:42"}
        assert account.created == utc(1793610845)
        assert account.closed is False

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_v2_retrieve")
    def test_retrieve_includes_configurations_and_maps_readiness(self, gateway, vcr):
        account = gateway.retrieve_account_v2(ACCOUNT)

        assert_sent_once(vcr)
        assert account.transfers_active
        assert account.payouts_enabled is True
        assert account.details_submitted is True
        assert account.currently_due == account.past_due == ()
        assert account.disabled_reason is None
        assert account.default_currency == "usd"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_v2_list")
    def test_list_reads_every_page_of_recipient_accounts(self, gateway, vcr):
        listed = gateway.list_accounts_v2()

        assert vcr.play_count == 2
        assert [a.id for a in listed] == [ACCOUNT, "acct_1QzR9aBc4DeF5gHi"]
        assert listed[0].metadata == {"escrow_owner": "user:42"}
        assert listed[0].created == utc(1793610845)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_links_v2_create")
    def test_onboarding_link_uses_the_account_onboarding_use_case(self, gateway, vcr):
        link = gateway.create_account_link_v2(
            account_id=ACCOUNT,
            link_type=account_services.onboarding_link_type(None),
            refresh_url="https://marketplace.example/onboarding/refresh/",
            return_url="https://marketplace.example/onboarding/return/",
        )

        assert_sent_once(vcr)
        assert isinstance(link, AccountLinkResult)
        assert link.url.startswith("https://accounts.stripe.com/r/")
        assert link.expires_at == utc(1793611146)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("events_v2_list")
    def test_thin_events_of_the_handled_types_are_listed(self, gateway, vcr):
        events = list(
            gateway.list_thin_events(
                created_gte=utc(1793577600), types=registry.event_types(WebhookEndpoint.THIN)
            )
        )

        assert_sent_once(vcr)
        assert [e["type"] for e in events] == [
            "v2.core.account[configuration.recipient].capability_status_updated",
            "v2.core.account[requirements].updated",
        ]
        assert all(e["related_object"]["id"] == ACCOUNT for e in events)

    def test_a_capability_v2_lacks_is_refused_before_any_request(self, gateway):
        with pytest.raises(ValueError, match="no Accounts v2 equivalent"):
            gateway.create_account_v2(
                idempotency_key="escrow-connect:account-owner:user:44:create:0",
                country="US",
                email=None,
                business_type=None,
                metadata={},
                capabilities=("transfers", "tax_reporting_us_1099_k"),
            )


class TestConnectedAccounts:
    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_create")
    def test_create_account_uses_controller_properties_and_callers_key(self, gateway, vcr):
        # Separate charges and transfers (the default): transfers, recipient.
        account = create_account(gateway, StandInAccount(owner_user_id=42))

        assert_sent_once(vcr)
        assert isinstance(account, AccountSnapshot)
        assert account.id == ACCOUNT
        assert account.country == "US"
        assert account.business_type == "individual"
        assert account.capabilities == {"transfers": "inactive"}
        assert not account.transfers_active
        assert account.charges_enabled is False
        assert account.payouts_enabled is False
        assert "external_account" in account.currently_due
        # A new account has no deadline to wait for: what is due is past due.
        assert account.past_due == account.currently_due
        assert account.disabled_reason == "requirements.past_due"
        assert account.metadata == {"escrow_owner": "user:42"}

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_create_full")
    def test_create_a_full_account_with_card_payments(self, gateway, vcr, settings):
        # Manual-capture destination charges: card_payments too, full agreement.
        settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "ESCROW_STRATEGY": MANUAL_CAPTURE}
        account = create_account(gateway, StandInAccount(owner_user_id=43))

        assert_sent_once(vcr)
        assert account.capabilities == {"card_payments": "inactive", "transfers": "inactive"}

    @pytest.mark.parametrize(
        ("capabilities", "agreement"),
        [("transfers", None), ((), None), (("transfers",), "partial")],
    )
    def test_bad_capabilities_or_agreement_are_refused_before_any_request(
        self, gateway, capabilities, agreement
    ):
        with pytest.raises((TypeError, ValueError)):
            gateway.create_account(
                idempotency_key="escrow-connect:account:owner-44:create",
                country="US",
                email=None,
                business_type=None,
                metadata={},
                capabilities=capabilities,
                service_agreement=agreement,
            )

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_retrieve")
    def test_retrieve_account_reports_readiness(self, gateway, vcr):
        account = gateway.retrieve_account(ACCOUNT)

        assert_sent_once(vcr)
        assert account.transfers_active
        assert account.capabilities == {"transfers": "active"}
        assert account.payouts_enabled is True
        assert account.details_submitted is True
        assert account.currently_due == ()
        assert account.eventually_due == ("individual.id_number",)
        assert account.disabled_reason is None
        assert account.default_currency == "usd"

    @pytest.mark.vcr(record_mode="none")
    @pytest.mark.default_cassette("accounts_retrieve")
    def test_any_api_base_replays_the_same_cassette(self, vcr):
        gateway = StripeGateway(
            api_key="sk_test_cassette_replay_only",
            api_base="http://localhost:12111/",
            max_network_retries=0,
        )

        assert gateway.retrieve_account(ACCOUNT).id == ACCOUNT
        assert_sent_once(vcr)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("accounts_list_created_since")
    def test_list_accounts_created_since(self, gateway, vcr):
        accounts = gateway.list_accounts(created_gte=utc(1793610245))

        assert_sent_once(vcr)
        assert [a.id for a in accounts] == ["acct_1QzWm4Rk7TbN2pYc", ACCOUNT]
        assert all(isinstance(a, AccountSnapshot) for a in accounts)
        assert accounts[1].metadata == {"escrow_owner": "user:42"}
        assert accounts[0].metadata == {"escrow_owner": "organization:7"}

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_links_create")
    def test_create_account_link(self, gateway, vcr):
        link = gateway.create_account_link(
            account_id=ACCOUNT,
            link_type=account_services.onboarding_link_type(None),
            refresh_url="https://marketplace.example/onboarding/refresh/",
            return_url="https://marketplace.example/onboarding/return/",
        )

        assert_sent_once(vcr)
        assert isinstance(link, AccountLinkResult)
        assert link.url.startswith("https://connect.stripe.com/setup/e/")
        assert link.expires_at == utc(1793611145)
        assert link.url not in repr(link)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("login_links_create")
    def test_create_login_link(self, gateway, vcr):
        link = gateway.create_login_link(account_id=ACCOUNT)

        assert_sent_once(vcr)
        assert isinstance(link, LoginLinkResult)
        assert link.url.startswith("https://connect.stripe.com/express/")

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_sessions_create")
    def test_create_account_session_for_embedded_onboarding(self, gateway, vcr):
        # services.accounts.create_account_session's default components.
        session = gateway.create_account_session(account_id=ACCOUNT)

        assert_sent_once(vcr)
        assert isinstance(session, AccountSessionResult)
        assert session.client_secret.startswith("accs_secret__")
        assert session.expires_at == utc(1793612645)
        assert session.client_secret not in repr(session)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_links_create_eventually_due")
    def test_create_account_link_collecting_everything_up_front(self, gateway, vcr, settings):
        settings.ESCROW_CONNECT = {
            **settings.ESCROW_CONNECT,
            "ONBOARDING_COLLECT": "eventually_due",
            "ONBOARDING_FUTURE_REQUIREMENTS": "include",
        }
        # What services.accounts.create_onboarding_link passes under these settings.
        link = gateway.create_account_link(
            account_id=ACCOUNT,
            link_type=account_services.onboarding_link_type(None),
            refresh_url="https://marketplace.example/onboarding/refresh/",
            return_url="https://marketplace.example/onboarding/return/",
            collect=escrow_settings.ONBOARDING_COLLECT,
            future_requirements=escrow_settings.ONBOARDING_FUTURE_REQUIREMENTS,
        )

        assert_sent_once(vcr)
        assert link.expires_at == utc(1793611205)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_links_create")
    def test_create_account_link_with_stripes_defaults_sends_no_collection_options(
        self, gateway, vcr
    ):
        # Spelled out, Stripe's defaults still send the request the package always sent.
        gateway.create_account_link(
            account_id=ACCOUNT,
            link_type="account_onboarding",
            refresh_url="https://marketplace.example/onboarding/refresh/",
            return_url="https://marketplace.example/onboarding/return/",
            collect="currently_due",
            future_requirements="omit",
        )

        assert_sent_once(vcr)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_sessions_create")
    def test_the_services_default_session_is_todays_request(self, gateway, vcr):
        # EMBEDDED_COMPONENTS' default: account_onboarding with Stripe's features.
        components = account_services.embedded_session_components()
        gateway.create_account_session(account_id=ACCOUNT, components=components)

        assert_sent_once(vcr)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("account_sessions_create_payouts")
    def test_create_account_session_for_the_payouts_page(self, gateway, vcr, settings):
        settings.ESCROW_CONNECT = {
            **settings.ESCROW_CONNECT,
            "EMBEDDED_COMPONENTS": ["account_onboarding", "payouts", "notification_banner"],
        }
        components = account_services.embedded_session_components(
            ["payouts", "notification_banner"]
        )

        session = gateway.create_account_session(account_id=ACCOUNT, components=components)

        assert_sent_once(vcr)
        assert isinstance(session, AccountSessionResult)
        assert session.expires_at == utc(1793612705)
        assert session.client_secret not in repr(session)


class TestPaymentIntents:
    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_create_platform")
    def test_create_on_the_platform_for_separate_charges_and_transfers(self, gateway, vcr):
        request = payment_intent_request(SEPARATE, "Task #58: logo design")
        intent = send(gateway, K.PAYMENT_INTENT, request, key=SEPARATE.key(K.PAYMENT_INTENT))

        assert_sent_once(vcr)
        assert isinstance(intent, PaymentIntentSnapshot)
        assert intent.id == "pi_3QzSaBPk9xR2vLq70aH4nM2c"
        assert intent.status == "requires_payment_method"
        assert intent.amount == 12500
        assert intent.currency == "usd"
        # Not endive's default automatic_async: the charge's balance
        # transaction is there as soon as it succeeds.
        assert intent.capture_method == "automatic"
        assert intent.transfer_group == SEPARATE.transfer_group
        assert (
            intent.client_secret == "pi_3QzSaBPk9xR2vLq70aH4nM2c_secret_Vb6XqRkE3TzYh8LpW2nC9dUfA"
        )
        assert intent.client_secret not in repr(intent)
        assert intent.latest_charge is None
        assert intent.metadata == {
            "escrow_payment_id": str(SEPARATE.pk),
            "task_id": "58",
            "transfer_group": SEPARATE.transfer_group,
        }

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_create_destination")
    def test_create_destination_charge_with_manual_capture_and_fee(self, gateway, vcr):
        request = payment_intent_request(DESTINATION, DESCRIPTION)
        intent = send(gateway, K.PAYMENT_INTENT, request, key=DESTINATION.key(K.PAYMENT_INTENT))

        assert_sent_once(vcr)
        assert intent.id == "pi_3QzSdKPk9xR2vLq71Fq8ZsWb"
        assert intent.capture_method == "manual"
        assert intent.amount_capturable == 0

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_create_on_behalf_of")
    def test_create_destination_charge_on_behalf_of_the_connected_account(
        self, gateway, vcr, settings
    ):
        settings.ESCROW_CONNECT = {**settings.ESCROW_CONNECT, "DESTINATION_ON_BEHALF_OF": True}
        request = payment_intent_request(ON_BEHALF_OF, DESCRIPTION)
        assert request["on_behalf_of"] == ACCOUNT
        intent = send(gateway, K.PAYMENT_INTENT, request, key=ON_BEHALF_OF.key(K.PAYMENT_INTENT))

        assert_sent_once(vcr)
        assert intent.id == "pi_3QzSfRPk9xR2vLq72Hc4YtNe"
        assert intent.capture_method == "manual"

    def test_application_fee_without_destination_is_refused_before_any_request(self, gateway):
        with pytest.raises(ValueError, match="application_fee_amount"):
            gateway.create_payment_intent(
                idempotency_key="escrow-connect:payment:733:create-intent",
                amount=1000,
                currency="usd",
                transfer_group="escrow-payment-733",
                metadata={},
                capture_method="automatic",
                application_fee_amount=100,
            )

    @pytest.mark.parametrize("key", ["", "   ", "k" * 256])
    def test_a_usable_idempotency_key_is_required(self, gateway, key):
        with pytest.raises(ValueError, match="idempotency_key"):
            gateway.create_transfer(
                idempotency_key=key,
                amount=1000,
                currency="usd",
                destination=ACCOUNT,
                source_transaction="ch_3QzSaBPk9xR2vLq70b7TeY5d",
                transfer_group="escrow-payment-731",
                metadata={},
            )

    @pytest.mark.parametrize("amount", [0, -5, 10.5, True])
    def test_amounts_must_be_positive_integers(self, gateway, amount):
        with pytest.raises((TypeError, ValueError)):
            gateway.create_payment_intent(
                idempotency_key="escrow-connect:payment:734:create-intent",
                amount=amount,
                currency="usd",
                transfer_group="escrow-payment-734",
                metadata={},
                capture_method="automatic",
            )

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_retrieve_expanded")
    def test_retrieve_with_expanded_charge_reads_capture_deadline(self, gateway, vcr):
        intent = gateway.retrieve_payment_intent("pi_3QzSdKPk9xR2vLq71Fq8ZsWb", expand_charge=True)

        assert_sent_once(vcr)
        assert intent.status == "requires_capture"
        assert intent.amount_capturable == 20000
        assert intent.latest_charge == "ch_3QzSdKPk9xR2vLq71Gm4YvNx"
        assert intent.capture_before == utc(1794215645)

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_list_customer_two_pages")
    def test_list_payment_intents_follows_every_page_with_its_filters(self, gateway, vcr):
        # The cassette matches each query: customer and created[gte] (as
        # created%5Bgte%5D) on both pages, starting_after on the second.
        gateway.page_size = 1
        intents = gateway.list_payment_intents(
            customer="cus_RbK1xQm7Tz4Wdn", created_gte=utc(1794559800)
        )

        assert vcr.play_count == 2
        assert [i.id for i in intents] == [
            "pi_3RbL4qPk9xR2vLq70Nc6Jd9E",
            "pi_3RbKz1Pk9xR2vLq71Hw5Qa3C",
        ]
        assert all(isinstance(i, PaymentIntentSnapshot) for i in intents)
        assert intents[0].metadata["escrow_operation"] == (
            "escrow-connect:tip:8f9a0b1c-2d3e-5f4a-8b5c-6d7e8f9a0b1c:intent:0"
        )

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_capture")
    def test_release_captures_the_hold_with_the_fee(self, gateway, vcr):
        intent = send(
            gateway,
            K.CAPTURE,
            capture_request(DESTINATION),
            key=DESTINATION.key(K.CAPTURE),
            target=DESTINATION.stripe_payment_intent_id,
        )

        assert_sent_once(vcr)
        assert intent.status == "succeeded"
        assert intent.amount_received == 20000
        assert intent.latest_charge == "ch_3QzSdKPk9xR2vLq71Gm4YvNx"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_cancel")
    def test_cancel_voids_the_hold(self, gateway, vcr):
        intent = send(
            gateway,
            K.CANCEL,
            dict(VOID_REQUEST),
            key=DESTINATION.key(K.CANCEL),
            target=DESTINATION.stripe_payment_intent_id,
        )

        assert_sent_once(vcr)
        assert intent.status == "canceled"
        assert intent.cancellation_reason == "requested_by_customer"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("charges_retrieve_connected")
    def test_retrieve_charge_on_a_connected_account(self, gateway, vcr):
        charge = gateway.retrieve_charge("py_1QzTfGQm5HwJ3uVe3bN8rT1k", stripe_account=ACCOUNT)

        assert_sent_once(vcr)
        assert isinstance(charge, ChargeSnapshot)
        assert charge.id == "py_1QzTfGQm5HwJ3uVe3bN8rT1k"
        assert charge.amount == 11250
        assert charge.balance_transaction == "txn_1QzTfGQm5HwJ3uVe0pX5cQ7h"
        assert charge.payment_intent is None
        assert charge.capture_before is None

    @pytest.mark.vcr
    @pytest.mark.default_cassette("disputes_retrieve")
    def test_retrieve_dispute(self, gateway, vcr):
        dispute = gateway.retrieve_dispute("dp_1QzV7kPk9xR2vLq7Jm3Xb9Qe")

        assert_sent_once(vcr)
        assert isinstance(dispute, DisputeSnapshot)
        assert dispute.charge == "ch_3QzSaBPk9xR2vLq70b7TeY5d"
        assert dispute.payment_intent == "pi_3QzSaBPk9xR2vLq70aH4nM2c"
        assert dispute.status == "needs_response"
        assert dispute.reason == "product_not_received"
        assert dispute.evidence_due_by == utc(1795478399)


class TestTransfers:
    @pytest.mark.vcr
    @pytest.mark.default_cassette("transfers_create")
    def test_create_transfer_from_the_charge(self, gateway, vcr):
        key = SEPARATE.key(K.TRANSFER)
        request = transfer_request(SEPARATE, 11250, ACCOUNT, key)
        transfer = send(gateway, K.TRANSFER, request, key=key)

        assert_sent_once(vcr)
        assert isinstance(transfer, TransferSnapshot)
        assert transfer.id == "tr_1QzTfGPk9xR2vLq7sD4kXq2L"
        assert transfer.destination == ACCOUNT
        assert transfer.source_transaction == SEPARATE.stripe_charge_id
        assert transfer.amount == 11250
        assert transfer.reversed is False
        assert transfer.metadata["escrow_operation"] == key

    @pytest.mark.vcr
    @pytest.mark.default_cassette("transfers_retrieve")
    def test_retrieve_transfer(self, gateway, vcr):
        transfer = gateway.retrieve_transfer("tr_1QzTfGPk9xR2vLq7sD4kXq2L")

        assert_sent_once(vcr)
        assert transfer.amount_reversed == 2000
        assert transfer.transfer_group == SEPARATE.transfer_group

    @pytest.mark.vcr
    @pytest.mark.default_cassette("transfers_list_two_pages")
    def test_list_transfers_follows_every_page(self, gateway, vcr):
        gateway.page_size = 1
        transfers = gateway.list_transfers(transfer_group=SEPARATE.transfer_group)

        assert vcr.play_count == 2
        assert [t.id for t in transfers] == [
            "tr_1QzTxYPk9xR2vLq7hQ2wE6rT",
            "tr_1QzTfGPk9xR2vLq7sD4kXq2L",
        ]

    @pytest.mark.vcr
    @pytest.mark.default_cassette("transfer_reversals_create")
    def test_reverse_part_of_a_transfer(self, gateway, vcr):
        key = SEPARATE.key(K.REVERSAL)
        reversal = send(
            gateway, K.REVERSAL, reversal_request(SEPARATE, TRANSFER, 2000, key), key=key
        )

        assert_sent_once(vcr)
        assert isinstance(reversal, TransferReversalSnapshot)
        assert reversal.transfer == "tr_1QzTfGPk9xR2vLq7sD4kXq2L"
        assert reversal.amount == 2000


class TestRefunds:
    @pytest.mark.vcr
    @pytest.mark.default_cassette("refunds_create")
    def test_refund_a_destination_charge_reversing_transfer_and_fee(self, gateway, vcr):
        key = DESTINATION.key(K.REFUND)
        request = refund_request(DESTINATION, 5000, "requested_by_customer", key)
        assert request["reverse_transfer"]
        assert request["refund_application_fee"]
        refund = send(gateway, K.REFUND, request, key=key)

        assert_sent_once(vcr)
        assert isinstance(refund, RefundSnapshot)
        assert refund.id == "re_3QzSdKPk9xR2vLq71cR2uH6j"
        assert refund.status == "succeeded"
        assert refund.charge == "ch_3QzSdKPk9xR2vLq71Gm4YvNx"
        assert refund.payment_intent == "pi_3QzSdKPk9xR2vLq71Fq8ZsWb"
        assert refund.metadata["escrow_operation"] == key

    @pytest.mark.vcr
    @pytest.mark.default_cassette("refunds_retrieve_failed")
    def test_retrieve_failed_refund(self, gateway, vcr):
        refund = gateway.retrieve_refund("re_3QzSaBPk9xR2vLq70cR2uH6j")

        assert_sent_once(vcr)
        assert refund.status == "failed"
        assert refund.failure_reason == "expired_or_canceled_card"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("refunds_list")
    def test_list_refunds_of_a_payment(self, gateway, vcr):
        refunds = gateway.list_refunds(payment_intent="pi_3QzSaBPk9xR2vLq70aH4nM2c")

        assert_sent_once(vcr)
        assert [(r.id, r.amount) for r in refunds] == [
            ("re_3QzSaBPk9xR2vLq70cR2uH6j", 2000),
            ("re_3QzSaBPk9xR2vLq70dK9pL3s", 1500),
        ]


class TestEvents:
    @pytest.mark.vcr
    @pytest.mark.default_cassette("events_retrieve_connected")
    def test_retrieve_event_of_a_connected_account_as_a_plain_dict(self, gateway, vcr):
        event = gateway.retrieve_event("evt_1QzW3nQm5HwJ3uVeF8a2LpTs", stripe_account=ACCOUNT)

        assert_sent_once(vcr)
        assert type(event) is dict
        assert event["type"] == "payout.failed"
        assert event["account"] == ACCOUNT
        payout = event["data"]["object"]
        assert type(payout) is dict
        assert payout["failure_code"] == "account_closed"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("events_list_two_pages")
    def test_list_events_pages_through_everything_since(self, gateway, vcr):
        # What webhooks.operations.fetch_missed_events asks a connected
        # account for: the Connect endpoint's event types (disputes of these
        # charge types are the platform's, never the connected account's).
        gateway.page_size = 2
        events = gateway.list_events(
            created_gte=1793610845,
            types=registry.event_types(WebhookEndpoint.CONNECT),
            stripe_account=ACCOUNT,
        )
        assert vcr.play_count == 1  # the first page is fetched eagerly

        ids = [event["id"] for event in events]

        assert vcr.play_count == 2
        assert ids == [
            "evt_1QzW3nQm5HwJ3uVeF8a2LpTs",
            "evt_1QzVxAQm5HwJ3uVe2kR7mDq1",
            "evt_1QzV7kQm5HwJ3uVeZ6t1YhB0",
        ]

    def test_list_events_refuses_more_than_twenty_types(self, gateway):
        with pytest.raises(ValueError, match="20"):
            gateway.list_events(created_gte=0, types=[f"type.{i}" for i in range(21)])


class TestSavedPaymentMethods:
    """The payer's Customer, a PaymentIntent that saves the card, tips charged off-session."""

    @pytest.mark.vcr
    @pytest.mark.default_cassette("customers_create")
    def test_create_customer_with_ids_only_and_the_operation_s_key(self, gateway, vcr):
        key = SAVING.key(K.CUSTOMER)
        customer = send(gateway, K.CUSTOMER, customer_request(SAVING, key), key=key)

        assert_sent_once(vcr)
        assert isinstance(customer, CustomerSnapshot)
        assert customer.id == CUSTOMER
        assert customer.metadata["escrow_payer_id"] == "7"
        assert customer.metadata["escrow_operation"] == key

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_create_saving_card")
    def test_create_a_payment_intent_that_saves_the_card(self, gateway, vcr):
        request = payment_intent_request(SAVING, "Task #63: fence repair")
        intent = send(gateway, K.PAYMENT_INTENT, request, key=SAVING.key(K.PAYMENT_INTENT))

        assert_sent_once(vcr)
        assert intent.customer == CUSTOMER
        assert intent.setup_future_usage == "off_session"
        assert intent.status == "requires_payment_method"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_intents_create_off_session")
    def test_charge_a_tip_on_the_saved_card_off_session(self, gateway, vcr):
        tip = OFF_SESSION_TIP
        intent = send(
            gateway, K.TIP_INTENT, tip_intent_request(tip), key=tip.intent_idempotency_key
        )

        assert_sent_once(vcr)
        assert intent.status == "succeeded"
        assert intent.latest_charge == "ch_3RbL4qPk9xR2vLq70Pd7Ke1F"
        assert intent.payment_method == SAVING.saved_payment_method_id
        assert intent.customer == CUSTOMER

    @pytest.mark.vcr(record_mode="none")
    @pytest.mark.default_cassette("error_authentication_required_off_session")
    def test_an_off_session_charge_that_needs_the_customer_carries_its_payment_intent(
        self, gateway, vcr
    ):
        tip = AUTHENTICATION_TIP
        with pytest.raises(CardDeclined) as excinfo:
            send(gateway, K.TIP_INTENT, tip_intent_request(tip), key=tip.intent_idempotency_key)

        assert_sent_once(vcr)
        error = excinfo.value
        assert error.code == "authentication_required"
        assert error.http_status == 402
        assert not error.is_transient
        intent = error.payment_intent
        assert isinstance(intent, PaymentIntentSnapshot)
        assert intent.id == "pi_3RbM6sPk9xR2vLq71Qe8Lf2G"
        assert intent.status == "requires_payment_method"
        assert intent.client_secret
        assert intent.last_payment_error["code"] == "authentication_required"

    @pytest.mark.vcr
    @pytest.mark.default_cassette("payment_methods_detach")
    def test_detach_the_saved_card(self, gateway, vcr):
        method = gateway.detach_payment_method(SAVING.saved_payment_method_id)

        assert_sent_once(vcr)
        assert isinstance(method, PaymentMethodSnapshot)
        assert method.id == SAVING.saved_payment_method_id
        assert method.customer is None
