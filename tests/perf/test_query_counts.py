"""The payment list, detail and dashboards cost the same number of SQL
queries whatever the size of the payment table (other people's payments and
one's own). The benchmark (benchmarks/run.py) measures the same at 1k-100k
rows on PostgreSQL; this is its fast guard, on any database."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_escrow_connect import factories as kit
from django_escrow_connect import swappable
from django_escrow_connect.conf import SEPARATE_CHARGES_AND_TRANSFERS
from tests import factories
from tests.payments.conftest import market, sim_stripe  # noqa: F401  (fixtures)

STATES = ["held", "released", "refunded", "awaiting_payment", "partially_refunded"]


def add_payment(payer, *, status: str = "held", split_with=(), **payee):
    """One payment of ``payer`` to ``payee`` (``payee_user`` or
    ``payee_organization``), its task, and ``split_with`` as further payees."""
    payment = kit.make_payment(
        factories.make_task(payer, **payee),
        status=status,
        strategy=SEPARATE_CHARGES_AND_TRANSFERS,
        platform_fee=1_000,
    )
    Payee = swappable.load("EscrowPayee")
    for position, user in enumerate(split_with, 1):
        Payee.objects.create(
            payment=payment,
            position=position,
            user=user,
            basis_points=5_000,
            destination_account_id="acct_perf_split",
        )
    return payment


def add_payments(place, count: int) -> None:
    """``count`` payments: a third the customer's to the doer, a third to the
    doer's organization, the rest between strangers."""
    strangers = [factories.make_user("stranger") for _ in range(2)]
    for index in range(count):
        kind = index % 3
        payer = place.customer if kind < 2 else strangers[0]
        payee = {"payee_user": place.doer} if kind == 0 else {}
        if kind == 1:
            payee = {"payee_organization": place.organization}
        elif kind == 2:
            payee = {"payee_user": strangers[1]}
        add_payment(payer, status=STATES[index % len(STATES)], **payee)


def requests(place):
    org = str(place.organization.pk)
    newest = swappable.load("EscrowPayment").objects.filter(payer=place.customer).first()
    return {
        "list": lambda: place.get(place.customer, "payment-list"),
        "list as payee": lambda: place.get(place.doer, "payment-list", role="task_doer"),
        "list of an organization": lambda: place.get(
            place.org_admin, "payment-list", organization_id=org
        ),
        "detail": lambda: place.get(place.customer, "payment-detail", payment_id=newest.pk),
        "customer dashboard": lambda: place.get(place.customer, "dashboard-customer"),
        "task-doer dashboard": lambda: place.get(place.doer, "dashboard-task-doer"),
        "organization dashboard": lambda: place.get(
            place.org_admin, "dashboard-task-doer", organization_id=org
        ),
    }


def query_counts(place) -> dict[str, int]:
    counts = {}
    for name, request in requests(place).items():
        with CaptureQueriesContext(connection) as captured:
            response = request()
        assert response.status_code == 200, (name, response.content)
        counts[name] = len(captured)
    return counts


@pytest.mark.django_db
def test_query_counts_do_not_grow_with_the_table(market):  # noqa: F811
    add_payments(market, 6)
    small = query_counts(market)
    add_payments(market, 45)
    large = query_counts(market)
    assert large == small
    # A fixed, small budget: count + page + five prefetches for a list
    # (transfers, refunds, disputes, milestones, payees; the payees'
    # transfers only when a page has payees).
    assert small["list"] == small["list as payee"] == 7
    # Dashboards add their totals (and an organization's its admin check);
    # a doer's earnings are two totals: payments released at once, and the
    # payee's own transfers of payments released in parts; its escrow is two
    # too: the held shares, and the shares a refused transfer left behind.
    assert max(small.values()) <= 13


def add_tips(payment, count: int, *, disputed: bool) -> None:
    """``count`` transferred tips on ``payment``, each with a dispute if ``disputed``."""
    Tip = swappable.load("EscrowTip")
    for _ in range(count):
        tip = Tip.objects.create(
            payment=payment,
            payer_id=payment.payer_id,
            amount=500,
            currency=payment.currency,
            status="transferred",
            intent_idempotency_key=kit.stripe_id("tipkey"),
            stripe_payment_intent_id=kit.stripe_id("pi"),
            stripe_charge_id=kit.stripe_id("ch"),
        )
        if disputed:
            kit.make_dispute(payment, tip=tip, amount=500, stripe_charge_id=tip.stripe_charge_id)


@pytest.mark.django_db
def test_a_payments_tips_and_their_disputes_cost_the_same_queries_however_many(market):  # noqa: F811
    """``GET payments/{id}/tips/`` reads the tips' disputes in one query,
    whatever the number of tips, of disputes, and of other payments' tips."""
    mine = add_payment(market.customer, status="released", payee_user=market.doer)
    add_tips(mine, 1, disputed=True)

    def tips_list() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as captured:
            response = market.get(market.customer, "payment-tips", payment_id=mine.pk)
        assert response.status_code == 200, response.content
        return len(captured), response.json()["results"]

    small, tips = tips_list()
    assert [len(tip["disputes"]) for tip in tips] == [1]
    add_tips(mine, 4, disputed=True)
    add_tips(mine, 2, disputed=False)
    stranger = factories.make_user("stranger")
    for _ in range(3):
        add_tips(add_payment(stranger, status="released", payee_user=market.doer), 2, disputed=True)
    large, tips = tips_list()
    assert sorted(len(tip["disputes"]) for tip in tips) == [0, 0, 1, 1, 1, 1, 1]
    assert large == small
    # The payment (and whether the user may see it), its tips, their disputes.
    assert small <= 3, small


def release_queries(market, settings, payees: int) -> int:  # noqa: F811
    """Queries of ``POST payments/confirm/`` of a one-milestone payment split ``payees`` ways."""
    from django_escrow_connect.terms import MilestoneTerms, PayeeShare
    from tests.payments.conftest import configure, stripe_account
    from tests.payments.test_milestones import EXTRA, held

    configure(
        settings,
        ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
    )
    people = [market.doer]
    for _ in range(payees - 1):
        person = factories.make_user("partner")
        stripe_account(owner_user=person)
        people.append(person)
    shares = [10_000 // payees] * payees
    shares[0] += 10_000 - sum(shares)
    payment = held(
        market,
        milestones=[MilestoneTerms("All", 9_000)],
        payees=[PayeeShare(user=p, basis_points=b) for p, b in zip(people, shares, strict=True)],
        amount=9_000,
    )
    with CaptureQueriesContext(connection) as captured:
        response = market.post(market.customer, "payment-confirm", payment_id=payment.pk)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "released"
    EXTRA.clear()
    return len(captured)


@pytest.mark.django_db
def test_a_split_release_costs_a_constant_number_of_queries_per_payee(market, settings):  # noqa: F811
    one, two, three = (release_queries(market, settings, n) for n in (1, 2, 3))
    per_payee = two - one
    assert per_payee > 0
    assert three - two == per_payee, (one, two, three)
    # O(payees), with a small constant: one payee's transfer is its three phases.
    assert per_payee <= 30, per_payee


@pytest.mark.django_db
def test_shares_a_refund_left_unsent_cost_the_same_queries_however_many(
    market,  # noqa: F811
    sim_stripe,  # noqa: F811
    settings,
):
    """The task-doer dashboard reads what refunds left of unsent shares (the
    ``REVERSAL_POLICY``'s division, in Python) in a fixed number of queries."""
    from tests.payments.conftest import configure, stripe_account
    from tests.payments.test_milestones import EXTRA, refused_then_refunded

    configure(
        settings,
        ESCROW_STRATEGY=SEPARATE_CHARGES_AND_TRANSFERS,
        PAYMENT_TERMS="tests.payments.test_milestones.split_terms",
        PLATFORM_FEE_BASIS_POINTS=1000,
    )
    partner = factories.make_user("partner")
    stripe_account(owner_user=partner)

    def dashboard() -> tuple[int, list[int]]:
        with CaptureQueriesContext(connection) as captured:
            response = market.get(market.doer, "dashboard-task-doer")
        assert response.status_code == 200, response.content
        return len(captured), [row["amount"] for row in response.json()["in_escrow"]]

    try:
        refused_then_refunded(market, sim_stripe, partner)
        one, owed = dashboard()
        assert owed == [4_860]
        for _ in range(2):
            refused_then_refunded(market, sim_stripe, partner)
        three, owed = dashboard()
        assert owed == [3 * 4_860]
    finally:
        EXTRA.clear()
    assert three == one, (one, three)
    # The budget above, and for shares on payments with refunds four reads:
    # the payments, their releases, the releases' transfers, the payees.
    assert one <= 13 + 4


@pytest.mark.django_db(transaction=True)
def test_creating_a_payment_costs_a_fixed_number_of_statements(market):  # noqa: F811
    """``POST payments/create/`` in autocommit, as a web process runs it.

    The package's 10: phase 1 (one transaction) locks the task, reads the
    open payment, the payee's account and the attempt number, and inserts
    the payment and its operation; phase 3 (one transaction) locks the
    payment and the operation and updates both. No savepoints, and the
    committed payment is not read again. Plus what the host's terms read
    (``get_escrow_terms``: the test hosts differ), measured on their own.
    """
    from django_escrow_connect import simulation
    from django_escrow_connect.terms import get_terms

    add_payments(market, 6)
    task = market.task()
    with CaptureQueriesContext(connection) as host:
        get_terms(type(task).objects.get(pk=task.pk))
    host_terms = len(host) - 1  # less the task's own read
    # The request's own statements: the simulated Stripe's events wait.
    events = simulation.EventCollector()
    previous = simulation.set_event_sink(events)
    try:
        with CaptureQueriesContext(connection) as captured:
            response = market.create(task)
    finally:
        simulation.set_event_sink(previous)
    assert response.status_code == 201, response.content
    assert events.types == ["payment_intent.created"], events.types
    statements = [q["sql"] for q in captured if q["sql"] not in ("BEGIN", "COMMIT")]
    assert not [s for s in statements if "SAVEPOINT" in s], statements
    assert len(statements) == 10 + host_terms, "\n".join(statements)


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_users_list_reads_the_payment_table_by_index(market):  # noqa: F811
    """``GET payments/`` (no role) follows the user's payments, not the table.

    The rule is ``payer = u OR payee_user = u OR id in the user's split
    payee rows``; written ``id IN (subquery)`` the last arm made PostgreSQL
    scan every payment (a hashed subplan it tests row by row). With the
    planner told to avoid sequential scans, the count and the page must
    still come from indexes: the count a bitmap OR of the three arms, the
    page a ``UNION`` of each arm's newest rows (see the next test).
    """
    add_payments(market, 30)
    Payment = swappable.load("EscrowPayment")
    table = Payment._meta.db_table
    with CaptureQueriesContext(connection) as captured:
        response = market.get(market.doer, "payment-list")
    assert response.status_code == 200, response.content
    reads = [q["sql"] for q in captured if f'FROM "{table}" WHERE' in q["sql"]]
    assert len(reads) == 2, reads  # the count and the page
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in reads:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"Seq Scan on {table}" not in plan, plan
            assert ("BitmapOr" in plan) == ("LIMIT" not in sql), plan


def listed(place, user, **params) -> list[str]:
    """Every payment id ``user``'s list shows, page after page (``page_size``)."""
    ids: list[str] = []
    page = 1
    while True:
        response = place.get(user, "payment-list", page=page, **params)
        assert response.status_code == 200, response.content
        body = response.json()
        ids += [p["payment_id"] for p in body["results"]]
        if body["next"] is None:
            assert body["count"] == len(ids)
            return ids
        page += 1


@pytest.mark.django_db
def test_a_list_across_roles_pages_newest_first_without_gaps_or_repeats(market):  # noqa: F811
    """A user who pays, is paid and shares payments: every page is a slice
    of one newest-first order (on PostgreSQL each page is a ``UNION`` of the
    three conditions' newest rows: the order must not break at a page edge)."""
    Payment = swappable.load("EscrowPayment")
    user, other = market.doer, factories.make_user("other")
    mine = []
    for index in range(11):
        if index % 3 == 0:
            mine.append(add_payment(user, payee_user=other))
        elif index % 3 == 1:
            mine.append(add_payment(other, payee_user=user))
        else:
            mine.append(add_payment(other, payee_user=market.customer, split_with=[user]))
        add_payment(other, payee_user=market.customer)  # not the user's
    same_time = Payment.objects.filter(pk__in=[p.pk for p in mine[:4]])
    same_time.update(created_at=mine[0].created_at)  # ties: broken by the id
    expected = [
        str(pk)
        for pk in Payment.objects.filter(pk__in=[p.pk for p in mine])
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
    ]
    for size in (1, 2, 3, 5, 100):
        assert listed(market, user, page_size=size) == expected, size
    task = mine[5].task_id
    assert listed(market, user, page_size=2, task_id=str(task)) == [str(mine[5].pk)]


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_heavy_users_page_reads_as_many_rows_as_the_page_needs(market):  # noqa: F811
    """The page of a list without ``role`` reads, per condition, the newest
    rows up to the page's end, not every payment of the user: with 60 paid and
    30 received, a first page of 5 reads at most 5 per condition."""
    user, other = market.customer, factories.make_user("other")
    for _ in range(60):
        add_payment(user, payee_user=market.doer)
    for _ in range(30):
        add_payment(other, payee_user=user)
    Payment = swappable.load("EscrowPayment")
    table = Payment._meta.db_table
    with CaptureQueriesContext(connection) as captured:
        response = market.get(user, "payment-list", page_size=5)
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 90
    page = [
        q["sql"] for q in captured if f'FROM "{table}" WHERE' in q["sql"] and "LIMIT" in q["sql"]
    ]
    assert len(page) == 1, page
    with connection.cursor() as cursor:
        # The plan a big table gets: on 90 rows a hash join or a sequential
        # scan of everything is cheapest, at 100,000 (the benchmark) index
        # lookups are. Statistics let each condition stop early (incremental sort).
        for method in ("seqscan", "hashjoin", "mergejoin"):
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {page[0]}")
        plan = cursor.fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    read = rows_read_from(plan[0]["Plan"], table)
    # Each condition stops after its newest 5 (and the next, to close the
    # sort's group; the split condition has none), then the candidates' rows
    # are read by primary key: 6 + 6 + 10. Read as one ORDER BY over the OR,
    # all 90 rows are.
    assert 0 < read <= 25, read


def rows_read_from(node: dict, table: str) -> int:
    """Rows that scans of ``table`` returned, over the whole plan."""
    own = 0
    if node.get("Relation Name") == table and "Scan" in node.get("Node Type", ""):
        own = int(node.get("Actual Rows", 0)) * int(node.get("Actual Loops", 1))
    return own + sum(rows_read_from(child, table) for child in node.get("Plans", []))
