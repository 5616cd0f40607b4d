"""Tips through the pages: the customer tips the doer once the payment is released.

With "Save my card for tips" ticked at checkout the package charges the tip
off-session on that card; without it the customer confirms the tip's own
PaymentIntent with a simulated card, exactly like the payment itself. The
simulated gateway's events go through the package's webhook pipeline, which
pays and transfers the tip.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from django_escrow_connect.services import accounts as account_services
from django_escrow_connect.states import TipStatus
from marketplace import services
from marketplace.models import Task

from .conftest import accepted_task, client_for

CONSENT_TEXT = b"tips I add later for this job are charged to it"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def released_task(people: Any, *, save_card: bool) -> Task:
    """Paid through the pay page (card saved or not), then released by the customer."""
    customer = client_for(people.customer)
    task = accepted_task(people)
    data = {"card": "success"}
    if save_card:
        data["save_card"] = "on"
    customer.post(reverse("task-pay", args=[task.pk]), data)
    customer.post(reverse("task-complete", args=[task.pk]))
    task.refresh_from_db()
    return task


def tips_of(task: Task) -> list[Any]:
    return list(services.task_tips(task))


def test_the_pay_page_offers_to_save_the_card_unticked_with_the_consent_text(people: Any) -> None:
    task = accepted_task(people)
    page = client_for(people.customer).get(reverse("task-pay", args=[task.pk]))
    assert b'name="save_card"' in page.content
    assert b'name="save_card" id="save-card">' in page.content  # not "checked"
    assert CONSENT_TEXT in page.content


def test_an_unticked_box_saves_nothing(people: Any) -> None:
    task = released_task(people, save_card=False)
    payment = services.current_payment(task)
    assert payment.payment_method_consent_at is None
    assert payment.saved_payment_method_id == ""


def test_saved_card_tip_is_paid_off_session_and_transferred_to_the_doer(people: Any) -> None:
    task = released_task(people, save_card=True)
    payment = services.current_payment(task)
    assert payment.payment_method_consent_at is not None
    assert payment.saved_payment_method_id

    customer = client_for(people.customer)
    page = customer.get(reverse("task-detail", args=[task.pk]))
    assert b"Add a tip" in page.content

    response = customer.post(reverse("task-tip", args=[task.pk]), {"amount": "5.25"}, follow=True)
    assert "Tip paid with your saved card: 5.25 USD goes to the doer." in messages_of(response)
    [tip] = tips_of(task)
    assert (tip.amount, tip.currency, tip.status) == (525, "usd", TipStatus.TRANSFERRED)
    [transfer] = tip.transfers.all()
    doer_account = account_services.get_account(owner_user=people.doer)
    assert (transfer.amount, transfer.destination_account_id) == (
        525,
        doer_account.stripe_account_id,
    )
    assert transfer.stripe_transfer_id
    assert b'id="tip-list"' in response.content
    assert b"Transferred" in response.content


def test_the_tip_form_sent_again_charges_the_saved_card_once(people: Any) -> None:
    """The form carries a key per rendering: the browser sending the same
    POST again (a reload after a timeout) is answered, not a second charge."""
    task = released_task(people, save_card=True)
    customer = client_for(people.customer)
    page = customer.get(reverse("task-detail", args=[task.pk]))
    key = page.context["tip_form"]["request_key"].value()
    assert key
    assert f'name="request_key" value="{key}"'.encode() in page.content

    data = {"amount": "5.25", "request_key": key}
    customer.post(reverse("task-tip", args=[task.pk]), data)
    again = customer.post(reverse("task-tip", args=[task.pk]), data, follow=True)

    assert "Tip paid with your saved card: 5.25 USD goes to the doer." in messages_of(again)
    [tip] = tips_of(task)
    assert tip.status == TipStatus.TRANSFERRED
    # A new rendering of the form, a new key: a tip of its own.
    fresh = customer.get(reverse("task-detail", args=[task.pk]))
    assert fresh.context["tip_form"]["request_key"].value() != key


def test_tip_without_saved_card_is_confirmed_on_its_own_page(people: Any) -> None:
    task = released_task(people, save_card=False)
    customer = client_for(people.customer)

    response = customer.post(reverse("task-tip", args=[task.pk]), {"amount": "3"})
    [tip] = tips_of(task)
    assert tip.status == TipStatus.AWAITING_PAYMENT
    pay_url = reverse("task-tip-pay", args=[task.pk, tip.pk])
    assert response.url == pay_url

    page = customer.get(pay_url)
    assert page.status_code == 200
    assert b"4242 4242 4242 4242" in page.content
    assert b"_secret_" not in page.content

    # A declined card leaves the tip payable on the same page.
    response = customer.post(pay_url, {"card": "declined"}, follow=True)
    assert "Tip declined: Your card was declined." in messages_of(response)
    tip.refresh_from_db()
    assert tip.status == TipStatus.FAILED

    response = customer.post(pay_url, {"card": "success"}, follow=True)
    assert "Tip of 3.00 USD paid: thank you!" in messages_of(response)
    tip.refresh_from_db()
    assert tip.status == TipStatus.TRANSFERRED
    assert [t.amount for t in tip.transfers.all()] == [300]


def test_tip_confirmed_with_3d_secure(people: Any) -> None:
    task = released_task(people, save_card=False)
    customer = client_for(people.customer)
    customer.post(reverse("task-tip", args=[task.pk]), {"amount": "2.00"})
    [tip] = tips_of(task)

    response = customer.post(
        reverse("task-tip-pay", args=[task.pk, tip.pk]), {"card": "authentication_required"}
    )
    tip.refresh_from_db()
    assert response.url == reverse(
        "simulated_stripe:authenticate", args=[tip.stripe_payment_intent_id]
    )
    assert customer.get(response.url).status_code == 200
    response = customer.post(response.url, {"action": "approve"}, follow=True)
    assert "Tip of 2.00 USD paid: thank you!" in messages_of(response)
    tip.refresh_from_db()
    assert tip.status == TipStatus.TRANSFERRED


def test_tip_above_the_maximum_shows_the_package_message_and_creates_nothing(
    people: Any,
) -> None:
    task = released_task(people, save_card=True)
    response = client_for(people.customer).post(
        reverse("task-tip", args=[task.pk]), {"amount": "100.01"}, follow=True
    )
    assert "A tip must be between 50 and 10000 (minor units)." in messages_of(response)
    assert tips_of(task) == []


def test_a_malformed_tip_is_refused_by_the_form(people: Any) -> None:
    task = released_task(people, save_card=True)
    customer = client_for(people.customer)
    for amount in ("1.234", "0", "-5", "abc"):
        response = customer.post(
            reverse("task-tip", args=[task.pk]), {"amount": amount}, follow=True
        )
        assert any(m.startswith("Tip: ") for m in messages_of(response)), amount
    assert tips_of(task) == []


def test_no_tip_before_the_release(people: Any) -> None:
    task = accepted_task(people)
    customer = client_for(people.customer)
    customer.post(reverse("task-pay", args=[task.pk]), {"card": "success"})
    page = customer.get(reverse("task-detail", args=[task.pk]))
    assert b"Add a tip" not in page.content
    response = customer.post(reverse("task-tip", args=[task.pk]), {"amount": "5"}, follow=True)
    assert "A tip can be added only once the payment is released." in messages_of(response)
    assert tips_of(task) == []


def test_only_the_customer_sees_and_gets_the_tip_form(people: Any) -> None:
    task = released_task(people, save_card=True)
    client_for(people.customer).post(reverse("task-tip", args=[task.pk]), {"amount": "1"})
    [tip] = tips_of(task)

    doer = client_for(people.doer)
    page = doer.get(reverse("task-detail", args=[task.pk]))
    assert b"Add a tip" not in page.content
    assert b'id="tip-list"' in page.content  # the payee sees the tips it got
    assert doer.post(reverse("task-tip", args=[task.pk]), {"amount": "5"}).status_code == 403

    stranger = client_for(people.stranger)
    page = stranger.get(reverse("task-detail", args=[task.pk]))
    assert b"Add a tip" not in page.content
    assert b'id="tip-list"' not in page.content
    assert stranger.post(reverse("task-tip", args=[task.pk]), {"amount": "5"}).status_code == 404

    pay_url = reverse("task-tip-pay", args=[task.pk, tip.pk])
    assert doer.get(pay_url).status_code == 404
    assert stranger.post(pay_url, {"card": "success"}).status_code == 404
    assert tips_of(task) == [tip]
