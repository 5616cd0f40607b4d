"""The package's tables carry only indexes something uses (issue 16).

Every index is one more write on each insert and non-HOT update (a webhook's
row, a payment held). On PostgreSQL Django adds a ``varchar_pattern_ops``
(``_like``) index for every CharField declared ``unique=True`` or
``db_index=True``; only ``LIKE 'prefix%'`` (``startswith``) uses it, and
nothing in the package filters that way (the admin's searches are
``icontains``/``iexact``: ``UPPER(col) LIKE`` / ``=``, which no plain index
serves). A single-column index on the leading column of a composite one is
redundant too. These tests read the real schema, so a field added later with
``unique=True`` or a foreign key under a composite index fails here.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction

from django_escrow_connect import swappable

pytestmark = pytest.mark.django_db

#: Columns that keep a varchar_pattern_ops index, with what uses it. None so far.
PREFIX_SEARCHED: dict[tuple[str, str], str] = {}

#: Each (model, column) that was ``unique=True`` and is now a UniqueConstraint:
#: the database must still refuse a duplicate.
UNIQUE_COLUMNS = [
    ("WebhookEvent", "stripe_event_id"),
    ("EscrowPayment", "transfer_group"),
    ("ConnectedAccount", "creation_idempotency_key"),
    ("MoneyOperation", "idempotency_key"),
    ("Refund", "idempotency_key"),
    ("Dispute", "stripe_dispute_id"),
    ("Transfer", "idempotency_key"),
    ("TransferReversal", "idempotency_key"),
    ("EscrowTip", "intent_idempotency_key"),
    ("EscrowTipTransfer", "idempotency_key"),
]


def package_tables() -> list[str]:
    """The tables of the package's models in use (swapped ones included)."""
    return sorted(swappable.load(name)._meta.db_table for name in swappable.LIBRARY_MODELS)


def pg_indexes() -> list[dict[str, Any]]:
    """Every index of the package's tables: name, table, columns, unique, partial, opclasses."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname, i.relname, ix.indisunique, ix.indpred IS NOT NULL,
                   ARRAY(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(attnum, n)
                         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                         ORDER BY k.n),
                   ARRAY(SELECT o.opcname FROM unnest(ix.indclass) WITH ORDINALITY c(oid, n)
                         JOIN pg_opclass o ON o.oid = c.oid ORDER BY c.n)
            FROM pg_index ix
            JOIN pg_class t ON t.oid = ix.indrelid
            JOIN pg_class i ON i.oid = ix.indexrelid
            WHERE t.relname = ANY(%s)
            """,
            [package_tables()],
        )
        return [
            {
                "table": table,
                "name": name,
                "unique": unique,
                "partial": partial,
                "columns": list(columns),
                "opclasses": list(opclasses),
            }
            for table, name, unique, partial, columns, opclasses in cursor.fetchall()
        ]


@pytest.mark.postgres
def test_no_pattern_ops_index_nothing_searches_by_prefix() -> None:
    indexes = pg_indexes()
    assert indexes  # the query found the tables
    like = {
        (ix["table"], ix["columns"][0]): ix["name"]
        for ix in indexes
        if any(op.endswith("_pattern_ops") for op in ix["opclasses"])
    }
    unused = {key: name for key, name in like.items() if key not in PREFIX_SEARCHED}
    assert unused == {}, (
        "declare the uniqueness/index in Meta.constraints/Meta.indexes instead of "
        "unique=True/db_index=True on the CharField (see docs/performance.md)"
    )


@pytest.mark.postgres
def test_no_single_column_index_under_a_composite() -> None:
    indexes = pg_indexes()
    # A partial index only covers some rows; a unique single-column index is
    # a rule, not a duplicate.
    leading = {
        (ix["table"], ix["columns"][0]): ix["name"]
        for ix in indexes
        if len(ix["columns"]) > 1 and not ix["partial"]
    }
    redundant = {
        ix["name"]: leading[ix["table"], ix["columns"][0]]
        for ix in indexes
        if len(ix["columns"]) == 1
        and not ix["unique"]
        and not ix["partial"]
        and (ix["table"], ix["columns"][0]) in leading
    }
    assert redundant == {}, "give the foreign key db_index=False: the composite serves it"


@pytest.mark.postgres
def test_the_webhook_insert_on_conflict_has_its_unique_index() -> None:
    # INSERT ... ON CONFLICT (stripe_event_id) needs a unique, non-partial
    # index on exactly that column, else PostgreSQL refuses the statement.
    table = swappable.load("WebhookEvent")._meta.db_table
    assert any(
        ix["table"] == table
        and ix["columns"] == ["stripe_event_id"]
        and ix["unique"]
        and not ix["partial"]
        for ix in pg_indexes()
    )


def unique_index_oid(table: str, column: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT ix.indexrelid FROM pg_index ix
            JOIN pg_class t ON t.oid = ix.indrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ix.indkey[0]
            WHERE t.relname = %s AND a.attname = %s AND ix.indisunique AND ix.indnatts = 1
            """,
            [table, column],
        )
        (oid,) = cursor.fetchone()
        return int(oid)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_in_place_on_postgresql() -> None:
    # No index is built and no foreign key re-validated: on a big table that
    # is what would hold the lock for minutes. The unique index stays the
    # same object throughout, so the column is never without it.
    table = swappable.load("WebhookEvent")._meta.db_table
    call_command("migrate", "escrow_connect", "0011", stdout=io.StringIO())
    try:
        before = unique_index_oid(table, "stripe_event_id")
        out = io.StringIO()
        call_command("sqlmigrate", "escrow_connect", "0012", stdout=out)
    finally:
        call_command("migrate", "escrow_connect", stdout=io.StringIO())
    sql = out.getvalue().upper()
    assert "RENAME CONSTRAINT" in sql
    assert "_LIKE" in sql
    for costly in ("CREATE INDEX", "CREATE UNIQUE INDEX", "ADD CONSTRAINT", "FOREIGN KEY"):
        assert costly not in sql
    assert unique_index_oid(table, "stripe_event_id") == before


@pytest.mark.parametrize(("model", "column"), UNIQUE_COLUMNS)
def test_each_former_unique_field_is_still_unique_in_the_database(model: str, column: str) -> None:
    Model = swappable.load(model)
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, Model._meta.db_table)
    assert any(info["unique"] and info["columns"] == [column] for info in found.values())


def test_a_duplicate_stripe_event_id_is_refused_by_the_database() -> None:
    WebhookEvent = swappable.load("WebhookEvent")
    fields = {"type": "payment_intent.succeeded", "endpoint": "platform", "payload": {}}
    WebhookEvent.objects.create(stripe_event_id="evt_dup", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookEvent.objects.create(stripe_event_id="evt_dup", **fields)
    assert WebhookEvent.objects.filter(stripe_event_id="evt_dup").count() == 1
