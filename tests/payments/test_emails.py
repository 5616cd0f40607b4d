"""The e-mail templates shipped for ``notifications.backends.EmailBackend``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import django
import pytest
from django.core import mail
from django.template.loader import render_to_string
from django.utils import translation

import django_escrow_connect
from django_escrow_connect.notifications.backends import EmailBackend, user_language
from django_escrow_connect.signals import ALL_SIGNALS
from tests.testapp.mail import AliasRecordingBackend

from .conftest import configure

TEMPLATE_DIR = Path(django_escrow_connect.__file__).parent / "templates/escrow_connect/email"
EVENTS_WITH_TEMPLATES = sorted(
    path.name.removesuffix("_subject.txt") for path in TEMPLATE_DIR.glob("*_subject.txt")
)
MAIN_EVENTS = {
    "payment_required",
    "payment_held",
    "payment_released",
    "payment_refunded",
    "payment_failed",
    "payment_canceled",
    "dispute_opened",
    "dispute_closed",
    "transfer_failed",
    "refund_failed",
    "milestone_released",
    "payee_transfer_failed",
    "tip_paid",
    "tip_transfer_failed",
    "tip_dispute_opened",
    "tip_dispute_closed",
    "tip_refunded",
}


def test_every_main_event_has_a_subject_and_a_body():
    assert set(EVENTS_WITH_TEMPLATES) >= MAIN_EVENTS
    for event in EVENTS_WITH_TEMPLATES:
        assert event in ALL_SIGNALS, f"template for unknown event {event}"
        assert (TEMPLATE_DIR / f"{event}.txt").exists()


def context():
    payment = SimpleNamespace(
        pk="5ca6a3e3-6f25-5d3f-a384-214184658f8f",
        task="Logo <design> for Bloom & Co",
        amount=10_000,
        amount_charged=10_000,
        platform_fee=1_000,
        amount_refunded=2_500,
        amount_transferred=9_000,
        currency="eur",
        capture_before=None,
        strategy="manual_capture",
        failure_message="Your card was declined.",
        get_status_display="Held in escrow",
    )
    return {
        "payment": payment,
        "client_secret": "pi_123_secret_never_in_mail",
        "refund": SimpleNamespace(
            amount=2_500, currency="eur", failure_reason="expired_or_canceled_card"
        ),
        "dispute": SimpleNamespace(
            amount=10_000,
            currency="eur",
            reason="fraudulent",
            status="lost",
            get_status_display="Lost",
            evidence_due_by=None,
        ),
        "incident": SimpleNamespace(code="balance_insufficient"),
        "account": SimpleNamespace(stripe_account_id="acct_1QzR8tQm5HwJ3uVe"),
        "payout": SimpleNamespace(amount=9_000, currency="eur", failure_message="Account closed."),
        "milestone": SimpleNamespace(name="Design <v1>", amount=2_000, currency="eur"),
        "transfers": [SimpleNamespace(amount=1_800, currency="eur")],
        "transfer": SimpleNamespace(amount=1_080, currency="eur", failure_code="account_closed"),
        "payee": SimpleNamespace(user=None),
        "tip": SimpleNamespace(
            pk="0b8f4c1e-2d3a-4e5f-9a6b-7c8d9e0f1a2b",
            amount=500,
            currency="eur",
            platform_fee=50,
            amount_refunded=200,
        ),
    }


@pytest.mark.parametrize("event", EVENTS_WITH_TEMPLATES)
def test_each_template_renders_plain_text(event):
    ctx = {"event": event, **context()}
    subject = render_to_string(f"escrow_connect/email/{event}_subject.txt", ctx).strip()
    body = render_to_string(f"escrow_connect/email/{event}.txt", ctx)
    assert subject
    assert "\n" not in subject
    assert body.strip()
    for text in (subject, body):
        assert "&amp;" not in text  # plain text, not HTML
        assert "&lt;" not in text
        assert "secret" not in text
        assert "{{" not in text
    if event.startswith(("payment", "dispute", "transfer", "refund", "milestone", "payee", "tip")):
        assert "Bloom & Co" in subject + body
        assert "EUR" in subject + body


def test_the_lifecycle_emails_payer_and_payee(market, sim_stripe, settings):
    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
        ESCROW_STRATEGY="separate_charges_and_transfers",
    )
    body = market.create(market.task()).json()
    market.pay(body["payment_id"])
    market.post(market.doer, "payment-refund", {"amount": 1_000}, payment_id=body["payment_id"])
    market.post(market.customer, "payment-confirm", payment_id=body["payment_id"])

    subjects = [message.subject for message in mail.outbox]
    assert subjects[0].startswith("Payment requested: 100.00 USD")
    assert "is held in escrow" in subjects[1]
    assert subjects[2].startswith("Refund of 10.00 USD")
    assert subjects[3].startswith("81.00 USD released")
    expected = sorted([market.customer.email, market.doer.email])
    for message in mail.outbox:
        assert sorted(message.to) == expected
        assert body["client_secret"] not in message.body
        assert body["client_secret"] not in message.subject
    assert "Sent to the doer:     81.00 USD" in mail.outbox[3].body


def test_a_release_captured_for_less_is_emailed_with_what_the_customer_paid(
    market, sim_stripe, settings
):

    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
        ESCROW_STRATEGY="manual_capture",
    )
    payment = market.held_payment()
    mail.outbox.clear()
    # Staff capture 40.00 of the 100.00 hold in the Stripe dashboard.
    payment = market.capture_in_dashboard(payment, 4_000)
    (released,) = [m for m in mail.outbox if " released for " in m.subject]
    assert released.subject.startswith("30.00 USD released")
    assert "Paid by the customer: 40.00 USD" in released.body
    assert "Sent to the doer:     30.00 USD" in released.body


def test_one_backend_named_without_a_list_is_that_backend(market, sim_stripe, settings):
    configure(
        settings,
        NOTIFICATION_BACKENDS="django_escrow_connect.notifications.backends.EmailBackend",
    )
    market.create(market.task())
    assert [m.subject[:17] for m in mail.outbox] == ["Payment requested"]


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS and send_mail(using=) are Django 6.1+")
def test_emails_go_through_the_configured_mailer(market, sim_stripe, settings):
    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
        EMAIL_MAILER="escrow",
    )
    settings.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        "escrow": {"BACKEND": "tests.testapp.mail.AliasRecordingBackend"},
    }
    AliasRecordingBackend.sent.clear()
    market.create(market.task())
    assert [alias for alias, _ in AliasRecordingBackend.sent] == ["escrow"]
    assert AliasRecordingBackend.sent[0][1].subject.startswith("Payment requested")
    assert mail.outbox == []  # not the default mailer


def language_by_username(user):
    """A RECIPIENT_LANGUAGE hook for the tests: the customer reads German."""
    return "de" if user.email.startswith("customer-") else None


def test_each_recipient_reads_the_email_in_their_language(market, sim_stripe, settings):
    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
        RECIPIENT_LANGUAGE="tests.payments.test_emails.language_by_username",
    )
    settings.LANGUAGE_CODE = "en"
    market.create(market.task())

    by_recipient = {tuple(message.to): message for message in mail.outbox}
    assert set(by_recipient) == {(market.customer.email,), (market.doer.email,)}
    german = by_recipient[(market.customer.email,)]
    english = by_recipient[(market.doer.email,)]
    assert german.subject.startswith("Zahlung angefordert: ")
    assert german.body.startswith("Hallo,\n\nEine Zahlung von ")
    assert "Zahlungsreferenz: " in german.body
    assert english.subject.startswith("Payment requested: 100.00 USD")
    assert english.body.startswith("Hello,\n\nA payment of 100.00 USD")


def test_without_a_language_the_email_is_in_the_site_language_not_the_actors(
    market, sim_stripe, settings
):
    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
    )
    settings.LANGUAGE_CODE = "en"
    # The request that causes the email runs in German; the recipients have
    # no language, so they get the site's.
    with translation.override("de"):
        market.create(market.task())
    [message] = mail.outbox
    assert message.subject.startswith("Payment requested: ")
    assert sorted(message.to) == sorted([market.customer.email, market.doer.email])


def test_the_default_hook_reads_the_users_language_attribute():
    assert user_language(SimpleNamespace(language="de")) == "de"
    assert user_language(SimpleNamespace(language="")) is None
    assert user_language(SimpleNamespace()) is None


def test_a_subclass_choosing_addresses_still_gets_one_email(market, sim_stripe, settings):
    configure(
        settings,
        NOTIFICATION_BACKENDS=["tests.payments.test_emails.FixedAddressBackend"],
        RECIPIENT_LANGUAGE="tests.payments.test_emails.language_by_username",
    )
    settings.LANGUAGE_CODE = "en"
    market.create(market.task())
    [message] = mail.outbox
    assert message.to == ["ops@example.com"]
    assert message.subject.startswith("Payment requested: ")


class FixedAddressBackend(EmailBackend):
    def recipients(self, event, /, **kwargs):
        return ["ops@example.com"]


def test_a_released_milestone_is_emailed_with_what_was_sent(market, sim_stripe, settings):
    from .test_milestones import EXTRA, held, three_milestones

    configure(
        settings,
        NOTIFICATION_BACKENDS=["django_escrow_connect.notifications.backends.EmailBackend"],
        ESCROW_STRATEGY="separate_charges_and_transfers",
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
        PLATFORM_FEE_BASIS_POINTS=1000,
    )
    EXTRA.clear()
    try:
        payment = held(market, milestones=three_milestones())
    finally:
        EXTRA.clear()
    design = payment.milestones.order_by("position").first()
    mail.outbox.clear()
    response = market.post(
        market.customer, "payment-release", {"milestone_id": design.pk}, payment_id=payment.pk
    )
    assert response.status_code == 200, response.content
    (message,) = [m for m in mail.outbox if "Milestone" in m.subject]
    assert message.subject.startswith('Milestone "Design" released')
    assert "Milestone amount:  20.00 USD" in message.body
    assert "Sent to a doer:    18.00 USD" in message.body
    assert sorted(message.to) == sorted([market.customer.email, market.doer.email])


@pytest.mark.parametrize(
    ("event", "german"),
    [
        ("milestone_released", "Meilenstein „Design <v1>“ für „Logo <design> for Bloom & Co“"),
        ("payee_transfer_failed", "Transfer an einen Zahlungsempfänger"),
        ("tip_paid", "Trinkgeld von 5.00 EUR"),
        ("tip_transfer_failed", "Das Trinkgeld für"),
        ("tip_dispute_opened", "Das Trinkgeld für „Logo <design> for Bloom & Co“ wird angefochten"),
        ("tip_dispute_closed", "Trinkgeld-Anfechtung lost: „Logo <design> for Bloom & Co“"),
        ("tip_refunded", "Das Trinkgeld für „Logo <design> for Bloom & Co“ wurde erstattet"),
    ],
)
def test_the_split_and_tip_emails_are_translated(event, german):
    with translation.override("de"):
        subject = render_to_string(f"escrow_connect/email/{event}_subject.txt", context())
        body = render_to_string(f"escrow_connect/email/{event}.txt", context())
    assert german in subject
    assert "Hallo" in body
