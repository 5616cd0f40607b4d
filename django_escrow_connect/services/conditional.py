"""Transitions applied by one conditional ``UPDATE ... RETURNING``.

The common webhook events move a row along one FSM transition. Reading the row
locked (``SELECT ... FOR UPDATE``), running the transition and saving it costs
two round trips and writes every column; a conditional update does the same in
one statement: its ``WHERE`` admits only the transition's source states (read
from the ``@transition`` declaration, :func:`~..transitions.sources`), so a
state never moves backwards, and the row lock the ``UPDATE`` takes serialises
concurrent deliveries exactly like the locked read did (the second one finds
the row in the target state and matches nothing).

On PostgreSQL, :func:`update_returning_and_follow` also moves the row a
changed row's foreign key names (the payment's task) in the same statement
(a data-modifying ``WITH``). Statements are built once per model and shape
and cached: compiling the same query through the ORM on every webhook event
cost more than running it.

A caller that gets ``None`` back falls back to the locked read, which handles
everything else (an unknown row, an amount mismatch, a repeated event, a state
the transition does not leave from).

The fast path is taken only where it is equivalent to ``save()``:

* the database can ``UPDATE ... RETURNING`` (PostgreSQL, SQLite);
* nobody listens to django-fsm's ``pre_transition``/``post_transition`` for
  the model (those signals need the instance and the transition call);
* the transition methods are the package's own, without ``conditions=``
  (a host that overrides one keeps the ORM path).

Internal: used by the webhook appliers; not part of the public API.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, router
from django_fsm.signals import post_transition, pre_transition

from .. import transitions

__all__: list[str] = []

#: Backends whose ``UPDATE`` can return the changed row.
RETURNING_VENDORS = frozenset({"postgresql", "sqlite"})


@dataclass(frozen=True)
class Raw:
    """An assignment computed in SQL: ``template`` with ``{column}`` for the
    column itself and ``%s`` for ``params`` (e.g. ``COALESCE(%s, {column})``)."""

    template: str
    params: tuple[Any, ...] = ()


def usable(model: Any, declared_on: type, names: Iterable[str]) -> bool:
    """Whether ``model``'s transitions ``names`` can be applied by an ``UPDATE``.

    ``declared_on`` is the package's abstract class that declares them: a
    model whose method resolves elsewhere overrides the transition.
    """
    connection = connections[router.db_for_write(model)]
    if connection.vendor not in RETURNING_VENDORS:
        return False
    if pre_transition.has_listeners(model) or post_transition.has_listeners(model):
        return False
    for name in names:
        if getattr(model, name, None) is not getattr(declared_on, name, object()):
            return False
        if any(t.conditions for t in transitions.declared(model, name)):
            return False
    return True


def update_returning(
    model: Any,
    *,
    assignments: dict[str, Any],
    where: dict[str, Any],
    where_in: dict[str, Iterable[Any]],
) -> Any | None:
    """``UPDATE model SET assignments WHERE where AND where_in RETURNING *``.

    Field names (not columns) everywhere (``pk`` for the primary key); a
    value of :class:`Raw` is SQL. Returns the changed row as a model instance
    (built from the returned columns: no second query), or ``None`` when no
    row matched. At most one row may match (callers filter on a unique column).
    """
    connection = connections[router.db_for_write(model)]
    in_lists = {name: sorted(set(values)) for name, values in where_in.items()}
    statement = _statement(model, connection.alias, assignments, where, in_lists, returning=True)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, statement.params(connection, assignments, where, in_lists))
        rows = cursor.fetchall()
    if not rows:
        return None
    if len(rows) > 1:  # pragma: no cover - callers match on a unique column
        raise RuntimeError(f"{model._meta.label}: a conditional update matched {len(rows)} rows")
    return from_row(model, connection, rows[0])


@dataclass(frozen=True)
class Follow:
    """A second conditional ``UPDATE``, of the row a changed row's foreign key names.

    ``via`` is the foreign key's field name on the first model; the followed
    row is matched by its primary key and ``where_in`` (field names of
    ``model``), and gets ``assignments`` (plain values).
    """

    model: Any
    via: str
    assignments: dict[str, Any]
    where_in: dict[str, Iterable[Any]]


#: Backends where one statement can update two tables (a data-modifying
#: ``WITH``): SQLite's ``WITH`` takes a ``SELECT`` only.
FOLLOW_VENDORS = frozenset({"postgresql"})


def can_follow(model: Any) -> bool:
    """Whether :func:`update_returning_and_follow` works on ``model``'s database."""
    return connections[router.db_for_write(model)].vendor in FOLLOW_VENDORS


def update_returning_and_follow(
    model: Any,
    *,
    assignments: dict[str, Any],
    where: dict[str, Any],
    where_in: dict[str, Iterable[Any]],
    follow: Follow,
) -> tuple[Any | None, int]:
    """:func:`update_returning`, and ``follow`` for the changed row, in one statement.

    ``WITH changed AS (UPDATE ... RETURNING ...), followed AS (UPDATE ...
    WHERE pk IN (SELECT fk FROM changed) ... RETURNING 1) SELECT changed.*,
    (SELECT count(*) FROM followed) FROM changed``: one round trip instead of
    two. Both updates run on the same snapshot and lock their rows as two
    separate ``UPDATE`` statements would (each re-checks its ``WHERE`` on a
    row a concurrent transaction changed). Returns the changed row (None when
    nothing matched; then nothing was followed either) and how many rows the
    follow-up changed. PostgreSQL only (:func:`can_follow`).
    """
    connection = connections[router.db_for_write(model)]
    ctes, params = follow_ctes(
        model, assignments=assignments, where=where, where_in=where_in, follow=follow
    )
    columns = ", ".join(changed_columns(model, connection))
    # Identifiers are quoted model metadata, values are parameters.
    sql = f"WITH {ctes} SELECT {columns}, (SELECT count(*) FROM followed) FROM changed"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return None, 0
    if len(rows) > 1:  # pragma: no cover - callers match on a unique column
        raise RuntimeError(f"{model._meta.label}: a conditional update matched {len(rows)} rows")
    *row, followed = rows[0]
    return from_row(model, connection, tuple(row)), int(followed)


def follow_ctes(
    model: Any,
    *,
    assignments: dict[str, Any],
    where: dict[str, Any],
    where_in: dict[str, Iterable[Any]],
    follow: Follow,
    condition: str = "",
) -> tuple[str, list[Any]]:
    """The two ``WITH`` items of :func:`update_returning_and_follow`, and their parameters.

    ``changed AS (UPDATE ... RETURNING <every column>), followed AS (UPDATE
    ... RETURNING 1)``: a caller that adds items of its own (the webhook
    pipeline's event insert, :mod:`..webhooks.shortcuts`) selects from
    ``changed`` (its columns: :func:`changed_columns`) and ``followed``.
    ``condition`` (SQL without parameters) is ANDed to the first ``WHERE``.
    """
    connection = connections[router.db_for_write(model)]
    in_lists = {name: sorted(set(values)) for name, values in where_in.items()}
    follow_in = {name: sorted(set(values)) for name, values in follow.where_in.items()}
    first = _statement(
        model, connection.alias, assignments, where, in_lists, returning=True, condition=condition
    )
    quote = connection.ops.quote_name
    followed_by = (
        f"{quote(follow.model._meta.pk.column)} IN "  # noqa: S608
        f"(SELECT {quote(model._meta.get_field(follow.via).column)} FROM changed)"
    )
    second = _statement(
        follow.model,
        connection.alias,
        follow.assignments,
        {},
        follow_in,
        returning=False,
        condition=followed_by,
    )
    params = first.params(connection, assignments, where, in_lists)
    params += second.params(connection, follow.assignments, {}, follow_in)
    return f"changed AS ({first.sql}), followed AS ({second.sql} RETURNING 1)", params


def changed_columns(model: Any, connection: Any) -> list[str]:
    """The quoted columns an ``UPDATE ... RETURNING`` of ``model`` returns (:func:`from_row`'s)."""
    return list(_changed_columns(model, connection.alias))


@functools.lru_cache(maxsize=64)
def _changed_columns(model: Any, alias: str) -> tuple[str, ...]:
    quote = connections[alias].ops.quote_name
    return tuple(quote(f.column) for f in model._meta.concrete_fields)


def update_count(
    model: Any,
    *,
    assignments: dict[str, Any],
    where: dict[str, Any],
    where_in: dict[str, Iterable[Any]],
) -> int:
    """:func:`update_returning` without the row: how many rows changed.

    What ``filter(...).update(...)`` does, without compiling a query each time.
    """
    connection = connections[router.db_for_write(model)]
    in_lists = {name: sorted(set(values)) for name, values in where_in.items()}
    statement = _statement(model, connection.alias, assignments, where, in_lists, returning=False)
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, statement.params(connection, assignments, where, in_lists))
        return int(cursor.rowcount)


def from_row(model: Any, connection: Any, row: tuple[Any, ...]) -> Any:
    """A model instance from a row of all its concrete columns, in ``_meta`` order.

    The values go through the converters the ORM would apply (``from_db``
    then behaves as for a row it read itself).
    """
    attnames, converters = _converters(model, connection)
    values = list(row)
    for index, field_converters, expression in converters:
        value = values[index]
        for converter in field_converters:
            value = converter(value, expression, connection)
        values[index] = value
    return model.from_db(connection.alias, attnames, values)


@dataclass(frozen=True)
class _Statement:
    """An ``UPDATE`` built once per model and shape: its SQL, and how to fill its parameters."""

    sql: str
    #: (field, raw template or None) per assignment, in the assignments' order.
    sets: tuple[tuple[Any, Raw | None], ...]
    wheres: tuple[Any, ...]
    where_ins: tuple[Any, ...]

    def params(
        self,
        connection: Any,
        assignments: dict[str, Any],
        where: dict[str, Any],
        where_in: dict[str, list[Any]],
    ) -> list[Any]:
        params: list[Any] = []
        for (field, _raw), value in zip(self.sets, assignments.values(), strict=True):
            if isinstance(value, Raw):
                params.extend(field.get_db_prep_save(p, connection) for p in value.params)
            else:
                params.append(field.get_db_prep_save(value, connection))
        for field, value in zip(self.wheres, where.values(), strict=True):
            params.append(field.get_db_prep_value(value, connection))
        for field, values in zip(self.where_ins, where_in.values(), strict=True):
            params.extend(field.get_db_prep_value(v, connection) for v in values)
        return params


def _statement(
    model: Any,
    alias: str,
    assignments: dict[str, Any],
    where: dict[str, Any],
    where_in: dict[str, list[Any]],
    *,
    returning: bool,
    condition: str = "",
) -> _Statement:
    # The shape: which columns, which are SQL (and which SQL), how many
    # values each IN has. Everything else is a parameter.
    shape = (
        tuple(
            (name, value.template if isinstance(value, Raw) else None)
            for name, value in assignments.items()
        ),
        tuple(where),
        tuple((name, len(values)) for name, values in where_in.items()),
    )
    return _build(model, alias, shape, returning, condition)


@functools.lru_cache(maxsize=512)
def _build(
    model: Any,
    alias: str,
    shape: tuple[tuple[tuple[str, str | None], ...], tuple[str, ...], tuple[tuple[str, int], ...]],
    returning: bool,
    condition: str,
) -> _Statement:
    """The statement of a shape; ``condition`` is SQL without parameters, ANDed first."""
    set_shape, where_names, in_shape = shape
    opts = model._meta
    quote = connections[alias].ops.quote_name

    def field_of(name: str) -> Any:
        return opts.pk if name == "pk" else opts.get_field(name)

    sets: list[tuple[Any, Raw | None]] = []
    set_sql: list[str] = []
    for name, template in set_shape:
        field = field_of(name)
        column = quote(field.column)
        if template is not None:
            set_sql.append(f"{column} = {template.format(column=column)}")
            sets.append((field, Raw(template)))
        else:
            set_sql.append(f"{column} = %s")
            sets.append((field, None))
    conditions: list[str] = [condition] if condition else []
    wheres = tuple(field_of(name) for name in where_names)
    conditions.extend(f"{quote(field.column)} = %s" for field in wheres)
    where_ins = tuple(field_of(name) for name, _count in in_shape)
    for field, (_name, count) in zip(where_ins, in_shape, strict=True):
        conditions.append(f"{quote(field.column)} IN ({', '.join(['%s'] * count)})")
    # Identifiers are quoted model metadata, values are parameters.
    sql = f"UPDATE {quote(opts.db_table)} SET {', '.join(set_sql)}"  # noqa: S608
    if conditions:
        sql += f" WHERE {' AND '.join(conditions)}"
    if returning:
        sql += f" RETURNING {', '.join(quote(f.column) for f in opts.concrete_fields)}"
    return _Statement(sql=sql, sets=tuple(sets), wheres=wheres, where_ins=where_ins)


#: Per connection (one per thread and alias), per model: the attnames of the
#: concrete fields and the converters of those that have any.
_CONVERTERS: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _converters(model: Any, connection: Any) -> tuple[list[str], list[tuple[int, list[Any], Any]]]:
    per_model = _CONVERTERS.setdefault(connection, {})
    found = per_model.get(model)
    if found is None:
        opts = model._meta
        fields = opts.concrete_fields
        converters = []
        for index, field in enumerate(fields):
            expression = field.get_col(opts.db_table)
            field_converters = connection.ops.get_db_converters(
                expression
            ) + field.get_db_converters(connection)
            if field_converters:
                converters.append((index, field_converters, expression))
        found = per_model[model] = ([f.attname for f in fields], converters)
    return found
