"""The escrow story in a real headless Chromium against a live server.

Post a task, bid, accept, pay with a simulated card, complete, then see the
released payment and the doer's notification. Screenshots of the key pages
go to ``$EXAMPLE_SCREENSHOT_DIR`` (default ``/tmp/example-screenshots``).

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the
``selenium`` Python package; ``scripts/test-example.sh`` installs them. The
test is skipped, with the reason, where they are absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_escrow_connect.states import PaymentStatus
from marketplace import services
from marketplace.models import Notification, Task, TaskStatus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("EXAMPLE_SCREENSHOT_DIR", "/tmp/example-screenshots"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


def _missing() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium chromium-driver)"
    if not (Path(CHROMEDRIVER).exists() or shutil.which(CHROMEDRIVER)):
        return f"chromedriver not found at {CHROMEDRIVER} (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    return ""


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="example-chromium-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """A few verbs over Selenium, each waiting for the page it leads to."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def click(self, selector: str) -> None:
        """Click something that submits a form, and wait for the next page."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        old_page = self.find("html")
        self.find(selector).click()
        wait = WebDriverWait(self.driver, 20)

        def left(driver: Any) -> bool:
            # staleness_of, but newer chromedrivers report a replaced page as
            # "Node with given id does not belong to the document" (a plain
            # WebDriverException) instead of a stale element reference.
            try:
                old_page.is_enabled()
            except WebDriverException:
                return True
            return False

        wait.until(left)
        # Interacting with a page still loading can fail inside chromedriver
        # ("Cannot find context with specified id"): wait for it to settle.
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def type(self, selector: str, text: str) -> None:
        field = self.find(selector)
        field.clear()
        field.send_keys(text)

    def text(self, selector: str = "body") -> str:
        return str(self.find(selector).text)

    def login(self, email: str) -> None:
        self.open("/login/")
        self.click(f'button[data-email="{email}"]')
        assert "Signed in as" in self.text(".messages")

    def logout(self) -> None:
        self.click("form[action='/logout/'] button")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = self.driver.execute_script("return document.body.scrollHeight")
        self.driver.set_window_size(1280, max(700, min(int(height) + 120, 3000)))
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def test_the_escrow_story_in_a_real_browser(browser: Any, live_server: Any, people: Any) -> None:
    page = Page(browser, live_server.url)

    # The customer posts a task.
    page.login("customer@example.com")
    assert "SIMULATED MODE" in page.text("#mode-banner")
    page.screenshot("01-home")
    page.open("/tasks/new/")
    page.type("#id_title", "Fix the contact form")
    page.type("#id_description", "It stopped sending e-mails.")
    page.click("#post-task")
    task = Task.objects.get(title="Fix the contact form")
    assert "Created" in page.text("#task-status")
    page.logout()

    # The doer bids 120.00 USD.
    page.login("doer@example.com")
    page.open(f"/tasks/{task.pk}/")
    page.type("#id_amount", "120.00")
    page.type("#id_message", "I can do it today.")
    page.click("#place-bid")
    assert "Your bid was sent" in page.text(".messages")
    page.logout()

    # The customer accepts the bid and pays with the simulated success card.
    page.login("customer@example.com")
    page.open(f"/tasks/{task.pk}/")
    assert "verified" in page.text("#bids")
    page.screenshot("02-task-with-bid")
    page.click('button.accept-bid[data-doer="Dana Doer"]')
    assert "Pay into escrow" in page.text("h1")
    assert "120.00 USD" in page.text("#pay-amount")
    page.screenshot("03-payment-page")
    page.find("#card-success").click()
    page.click("#pay-submit")
    assert "held in escrow" in page.text(".messages")
    assert "In progress" in page.text("#task-status")
    assert "Held in escrow" in page.text("#payment-status")
    page.screenshot("04-paid-held-in-escrow")

    # The customer confirms the work: the payment is released.
    page.click("#complete-button")
    assert "payment was released" in page.text(".messages")
    assert "Completed" in page.text("#task-status")
    assert "Released" in page.text("#payment-status")
    assert "108.00 USD" in page.text("#amount-transferred")
    page.screenshot("05-released")
    page.open("/dashboard/customer/")
    assert "Released" in page.text("table")
    page.logout()

    # The doer sees the released payment and the notification.
    page.login("doer@example.com")
    page.open("/notifications/")
    notes = page.text("#notification-list")
    assert "Payment released: 108.00 USD for “Fix the contact form”" in notes
    page.screenshot("06-doer-notifications")
    page.open("/dashboard/doer/")
    assert "108.00 USD" in page.text("#doer-stats")
    page.screenshot("07-doer-earnings")

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    assert services.current_payment(task).status == PaymentStatus.RELEASED
    assert Notification.objects.filter(user=people.doer, kind="payment_released").exists()


def test_my_payouts_embeds_stripes_components(browser: Any, live_server: Any, people: Any) -> None:
    """Connect.js (the simulated stand-in) renders the payouts and the banner."""
    from selenium.webdriver.support.ui import WebDriverWait

    page = Page(browser, live_server.url)
    page.login("doer@example.com")
    page.click("#nav-my-payouts")
    assert "My payouts" in page.text("h1")

    def rendered(driver: Any) -> bool:
        states = driver.execute_script(
            "return Array.from(document.querySelectorAll("
            "'stripe-connect-payouts, stripe-connect-notification-banner'"
            ")).map(e => e.getAttribute('data-state'))"
        )
        assert "error" not in states, page.text("main")
        return bool(states == ["ready", "ready"])

    WebDriverWait(browser, 20).until(rendered)
    banner = page.text("stripe-connect-notification-banner")
    assert "nothing needs your attention" in banner
    payouts = page.text("stripe-connect-payouts")
    assert "Payouts" in payouts
    assert "No payouts yet." in payouts
    assert "instant_payouts: off" in payouts
    assert page.find("#connect-error").is_displayed() is False
    page.screenshot("08-my-payouts")


@pytest.mark.parametrize("per_milestone", [False, True], ids=["up_front", "per_milestone"])
def test_milestones_released_one_by_one_in_a_real_browser(
    browser: Any, live_server: Any, people: Any, per_milestone: bool
) -> None:
    """A two-person team bid in three milestones, released step by step.

    Paid once up front, or (``per_milestone``) each milestone paid for when it
    comes up, from the task page's "Pay milestone k".
    """
    from .conftest import make_user, verify

    partner = make_user("partner@example.com", "Pia Partner")
    verify(owner_user=partner)
    task = services.post_task(people.customer, "Build a small online shop")
    services.place_bid(
        task.pk,
        people.doer,
        amount=20000,
        milestones=[("Design", 6000), ("Build", 9000), ("Launch", 5000)],
        partner=partner,
        partner_basis_points=4000,
        fund_per_milestone=per_milestone,
    )
    page = Page(browser, live_server.url)
    shot = "per-milestone-" if per_milestone else ""

    # The customer accepts the team's bid and pays: 200.00 USD once, up front,
    # or the first milestone's 60.00 USD.
    page.login("customer@example.com")
    page.open(f"/tasks/{task.pk}/")
    page.click('button.accept-bid[data-doer="Dana Doer"]')
    assert ("60.00 USD" if per_milestone else "200.00 USD") in page.text("#pay-amount")
    page.find("#card-success").click()
    page.click("#pay-submit")
    assert "held in escrow" in page.text(".messages")
    if per_milestone:
        assert "Held in escrow" in page.text("#part-1 .part-status")
        assert "Not paid yet" in page.text("#part-2 .part-status")
    else:
        assert page.text("#milestones").count("held") == 3
    page.screenshot(f"{shot}09-milestones-held")

    # Milestone by milestone: each release pays both payees their share of its net.
    shares = [("32.40 USD", "21.60 USD"), ("48.60 USD", "32.40 USD"), ("27.00 USD", "18.00 USD")]
    for number, (doer_share, partner_share) in enumerate(shares, start=1):
        if per_milestone:
            if number > 1:
                page.click("#pay-milestone-button")
                assert f"Milestone {number} of 3" in page.text("#pay-milestone")
                page.find("#card-success").click()
                page.click("#pay-submit")
                assert "held in escrow" in page.text(".messages")
            page.click(f"#release-part-{number}")
            assert "Milestone released" in page.text(".messages")
            assert "Released" in page.text(f"#part-{number} .part-status")
        else:
            page.click(f"#release-milestone-{number}")
            assert "Milestone released" in page.text(".messages")
            assert "released" in page.text(f"#milestone-{number} .milestone-status")
        # The payment panel shows the newest payment: the milestone's own part.
        assert f"{doer_share} created" in page.text("#payee-1")
        assert "Dana Doer" in page.text("#payee-1")
        assert f"{partner_share} created" in page.text("#payee-2")
        assert "Pia Partner" in page.text("#payee-2")
        page.screenshot(f"{shot}1{number - 1}-milestone-{number}-released")
    assert "Completed" in page.text("#task-status")
    assert "Released" in page.text("#payment-status")

    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETED
    payments = list(services.payment_model().objects.filter(task=task))
    assert len(payments) == (3 if per_milestone else 1)
    assert {payment.status for payment in payments} == {PaymentStatus.RELEASED}
    transfers = [t.amount for payment in payments for t in payment.transfers.all()]
    assert sorted(transfers) == sorted([3240, 2160, 4860, 3240, 2700, 1800])
