"""The escrow story through the web pages: post, bid, accept, pay, complete.

Every step is a request a browser would make; the simulated gateway plays
Stripe and its events go through the package's real webhook pipeline.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from django_escrow_connect.simulation import simulated_stripe
from django_escrow_connect.states import PaymentStatus
from marketplace import services
from marketplace.models import Bid, Notification, Task, TaskStatus

from .conftest import accepted_task, client_for, paid_task


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def payment_of(task: Task) -> Any:
    return services.current_payment(task)


def test_the_whole_story_through_the_pages(people: Any) -> None:
    customer, doer = client_for(people.customer), client_for(people.doer)

    response = customer.post(
        reverse("task-new"), {"title": "Fix my contact form", "description": "It is broken."}
    )
    task = Task.objects.get(title="Fix my contact form")
    assert response.url == reverse("task-detail", args=[task.pk])
    assert task.status == TaskStatus.CREATED

    response = doer.post(
        reverse("task-bid", args=[task.pk]),
        {"amount": "120.00", "currency": "usd", "bid_as": "me", "message": "Easy."},
        follow=True,
    )
    assert "Your bid was sent to the customer." in messages_of(response)
    bid = Bid.objects.get(task=task)
    assert (bid.amount, bid.currency, bid.doer_user) == (12000, "usd", people.doer)
    task.refresh_from_db()
    assert task.status == TaskStatus.BIDDING

    response = customer.post(reverse("bid-accept", args=[bid.pk]))
    assert response.url == reverse("task-pay", args=[task.pk])
    task.refresh_from_db()
    assert task.status == TaskStatus.BID_ACCEPTED

    page = customer.get(reverse("task-pay", args=[task.pk]))
    assert page.status_code == 200
    assert b"4242 4242 4242 4242" in page.content
    assert b"client_secret" not in page.content
    assert b"_secret_" not in page.content
    assert page["Cache-Control"] == "no-store"
    assert payment_of(task) is None  # opening the page creates nothing

    response = customer.post(reverse("task-pay", args=[task.pk]), {"card": "success"}, follow=True)
    assert "Payment received: the money is held in escrow." in messages_of(response)
    task.refresh_from_db()
    assert (task.status, task.payment_status) == (TaskStatus.IN_PROGRESS, "payment_in_escrow")
    assert payment_of(task).status == PaymentStatus.HELD
    assert b"Held in escrow" in response.content

    response = customer.post(reverse("task-complete", args=[task.pk]), follow=True)
    assert "Work confirmed: the payment was released to the doer." in messages_of(response)
    task.refresh_from_db()
    payment = payment_of(task)
    assert (task.status, task.payment_status) == (TaskStatus.COMPLETED, "payment_released")
    assert (payment.status, payment.amount_transferred, payment.platform_fee) == (
        PaymentStatus.RELEASED,
        10800,
        1200,
    )

    notes = doer.get(reverse("notifications"))
    assert "Payment released: 108.00 USD for “Fix my contact form”" in notes.content.decode()
    kinds = set(Notification.objects.filter(user=people.doer).values_list("kind", flat=True))
    assert {"bid", "payment_held", "payment_released"} <= kinds


def test_a_bid_from_a_doer_without_a_verified_account_cannot_be_accepted(people: Any) -> None:
    task = services.post_task(people.customer, "Wash the car")
    bid = services.place_bid(task.pk, people.newbie, amount=3000, currency="usd")

    response = client_for(people.customer).post(reverse("bid-accept", args=[bid.pk]), follow=True)

    assert any("has not finished setting up payouts" in m for m in messages_of(response))
    assert '<a href="/onboarding/">Payouts set-up</a>' in response.content.decode()
    task.refresh_from_db()
    bid.refresh_from_db()
    assert task.status == TaskStatus.BIDDING
    assert not bid.accepted
    note = Notification.objects.get(user=people.newbie, kind="onboarding_needed")
    assert note.url == reverse("onboarding")


def test_an_organization_bid_needs_the_organization_account(people: Any) -> None:
    task = services.post_task(people.customer, "Build a website")
    response = client_for(people.member).post(
        reverse("task-bid", args=[task.pk]),
        {"amount": "500", "currency": "usd", "bid_as": str(people.organization.pk)},
    )
    assert response.status_code == 302
    bid = Bid.objects.get(task=task)
    assert bid.doer_organization == people.organization
    assert bid.doer_user is None

    client_for(people.customer).post(reverse("bid-accept", args=[bid.pk]))
    task.refresh_from_db()
    assert task.status == TaskStatus.BID_ACCEPTED  # Acme's account is verified
    assert Notification.objects.filter(user=people.admin, kind="bid").exists()


def test_only_the_customer_accepts_and_pays(people: Any) -> None:
    task = services.post_task(people.customer, "Mow the lawn")
    bid = services.place_bid(task.pk, people.doer, amount=4000, currency="usd")
    stranger = client_for(people.stranger)

    response = stranger.post(reverse("bid-accept", args=[bid.pk]), follow=True)
    assert "Only the task's customer can accept a bid." in messages_of(response)
    services.accept_bid(bid.pk, people.customer)
    response = stranger.get(reverse("task-pay", args=[task.pk]), follow=True)
    assert "Only the task's customer can pay for it." in messages_of(response)
    assert payment_of(task) is None
    detail = stranger.get(reverse("task-detail", args=[task.pk]))
    assert b"payment-panel" not in detail.content


@pytest.mark.parametrize("simulated", [True, False])
def test_opening_the_pay_page_creates_no_payment(people: Any, simulated: bool) -> None:
    """A GET (a link, a prefetch, a crawler) must not create a PaymentIntent."""
    from django.test import override_settings

    task = accepted_task(people)
    calls = len(simulated_stripe.calls)
    customer = client_for(people.customer)
    with override_settings(SIMULATED_STRIPE=simulated, STRIPE_PUBLISHABLE_KEY="pk_test_example"):
        page = customer.get(reverse("task-pay", args=[task.pk]))
        assert customer.head(reverse("task-pay", args=[task.pk])).status_code == 200
    assert page.status_code == 200
    assert "120.00 USD" in page.content.decode()
    assert payment_of(task) is None
    assert simulated_stripe.calls[calls:] == []


def test_a_declined_card_then_a_good_one(people: Any) -> None:
    task = accepted_task(people)
    customer = client_for(people.customer)

    response = customer.post(reverse("task-pay", args=[task.pk]), {"card": "declined"}, follow=True)
    assert "Payment declined: Your card was declined." in messages_of(response)
    assert payment_of(task).status == PaymentStatus.FAILED
    assert b"The last attempt failed" in response.content
    assert Notification.objects.filter(user=people.customer, kind="payment_failed").exists()

    customer.post(reverse("task-pay", args=[task.pk]), {"card": "success"})
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS
    assert payment_of(task).status == PaymentStatus.HELD


@pytest.mark.parametrize(
    ("action", "payment_status", "task_status"),
    [
        ("approve", PaymentStatus.HELD, TaskStatus.IN_PROGRESS),
        ("deny", PaymentStatus.FAILED, TaskStatus.BID_ACCEPTED),
    ],
)
def test_three_d_secure_approve_or_deny(
    people: Any, action: str, payment_status: str, task_status: str
) -> None:
    task = accepted_task(people)
    customer = client_for(people.customer)

    response = customer.post(
        reverse("task-pay", args=[task.pk]), {"card": "authentication_required"}
    )
    intent_id = payment_of(task).stripe_payment_intent_id
    assert response.url == f"/escrow/simulated/authenticate/{intent_id}/"
    page = customer.get(response.url)
    assert b"Confirm your payment" in page.content
    assert client_for(people.stranger).get(response.url).status_code == 404

    customer.post(response.url, {"action": action})
    task.refresh_from_db()
    assert payment_of(task).status == payment_status
    assert task.status == task_status


def test_the_doer_refunds_after_release(people: Any) -> None:
    task = paid_task(people, amount=8000)
    services.complete_task(task.pk, people.customer)

    refused = client_for(people.customer).post(reverse("task-refund", args=[task.pk]), follow=True)
    assert "Only the doer or platform staff can refund a payment." in messages_of(refused)

    response = client_for(people.doer).post(reverse("task-refund", args=[task.pk]), follow=True)
    assert "Refunded 80.00 USD to the customer." in messages_of(response)
    payment = payment_of(task)
    assert (payment.status, payment.amount_refunded, payment.amount_reversed) == (
        PaymentStatus.REFUNDED,
        8000,
        7200,
    )


def test_a_dispute_freezes_the_release_until_won(people: Any) -> None:
    task = accepted_task(people)
    customer = client_for(people.customer)
    customer.post(reverse("task-pay", args=[task.pk]), {"card": "disputed"})
    assert payment_of(task).status == PaymentStatus.DISPUTED
    assert Notification.objects.filter(user=people.doer, kind="dispute").exists()

    response = customer.post(reverse("task-complete", args=[task.pk]), follow=True)
    assert "A payment that is disputed cannot be released." in messages_of(response)

    customer.post(reverse("task-dispute", args=[task.pk]), {"action": "won"})
    assert payment_of(task).status == PaymentStatus.HELD
    customer.post(reverse("task-complete", args=[task.pk]))
    assert payment_of(task).status == PaymentStatus.RELEASED


def test_a_lost_dispute_cancels_the_task(people: Any) -> None:
    task = paid_task(people)
    customer = client_for(people.customer)
    customer.post(reverse("task-dispute", args=[task.pk]), {"action": "open"})
    assert payment_of(task).status == PaymentStatus.DISPUTED
    customer.post(reverse("task-dispute", args=[task.pk]), {"action": "lost"})
    task.refresh_from_db()
    assert payment_of(task).status == PaymentStatus.DISPUTE_LOST
    assert task.status == TaskStatus.CANCELLED


def test_a_refused_transfer_keeps_the_money_held_and_can_be_retried(
    people: Any, fresh_simulated_stripe: Any
) -> None:
    from django_escrow_connect.exceptions import BalanceInsufficient

    task = paid_task(people)
    fresh_simulated_stripe.fail_next(
        "create_transfer", BalanceInsufficient("No money.", code="balance_insufficient")
    )
    customer = client_for(people.customer)

    response = customer.post(reverse("task-complete", args=[task.pk]), follow=True)
    assert any("Stripe refused the release" in m for m in messages_of(response))
    task.refresh_from_db()
    assert (task.status, payment_of(task).status) == (TaskStatus.IN_PROGRESS, PaymentStatus.HELD)
    assert Notification.objects.filter(user=people.customer, kind="transfer_failed").exists()

    customer.post(reverse("task-complete", args=[task.pk]))
    task.refresh_from_db()
    assert (task.status, payment_of(task).status) == (TaskStatus.COMPLETED, PaymentStatus.RELEASED)


def test_cancelling_before_payment_cancels_the_unpaid_payment(people: Any) -> None:
    task = accepted_task(people)
    customer = client_for(people.customer)
    services.start_payment(task.pk, people.customer)  # the payment, not paid yet
    payment = payment_of(task)

    customer.post(reverse("task-cancel", args=[task.pk]))

    task.refresh_from_db()
    payment.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert payment.status == PaymentStatus.CANCELED


def test_a_held_payment_cannot_be_cancelled_by_the_customer(people: Any) -> None:
    task = paid_task(people)
    response = client_for(people.customer).post(reverse("task-cancel", args=[task.pk]), follow=True)
    assert any("ask the doer" in m for m in messages_of(response))
    task.refresh_from_db()
    assert task.status == TaskStatus.IN_PROGRESS


def test_in_test_mode_the_payment_page_uses_stripe_js(people: Any) -> None:
    """With sk_test_ keys the page hands the client secret to Stripe.js's Payment Element."""
    from django.test import override_settings

    task = accepted_task(people)
    customer = client_for(people.customer)
    with override_settings(SIMULATED_STRIPE=False, STRIPE_PUBLISHABLE_KEY="pk_test_example"):
        # Opening the page shows the price and a button; nothing is created.
        opened = customer.get(reverse("task-pay", args=[task.pk]))
        assert payment_of(task) is None
        assert 'id="pay-start"' in opened.content.decode()
        assert "client_secret" not in opened.context
        assert b'name="save_card"' in opened.content  # consent before the PaymentIntent
        page = customer.post(reverse("task-pay", args=[task.pk]))
    html = page.content.decode()
    assert page["Cache-Control"] == "no-store"
    assert '<script src="https://js.stripe.com/v3/"></script>' in html
    assert "STRIPE TEST MODE" in html
    assert "SIMULATED MODE" not in html
    secret = page.context["client_secret"]
    assert secret.startswith(payment_of(task).stripe_payment_intent_id + "_secret_")
    assert f'<script id="client-secret" type="application/json">"{secret}"</script>' in html
    assert '"pk_test_example"' in html
    assert "/pay/return/" in page.context["return_url"]
    assert "4242 4242 4242 4242" not in html.replace("Test mode: use 4242 4242 4242 4242", "")
