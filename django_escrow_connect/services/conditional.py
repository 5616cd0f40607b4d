"""Transitions applied by one conditional ``UPDATE ... RETURNING``.

The common webhook events move a row along one FSM transition. Reading the row
locked (``SELECT ... FOR UPDATE``), running the transition and saving it costs
two round trips and writes every column; a conditional update does the same in
one statement: its ``WHERE`` admits only the transition's source states (read
from the ``@transition`` declaration, :func:`~..transitions.sources`), so a
state never moves backwards, and the row lock the ``UPDATE`` takes serialises
concurrent deliveries exactly like the locked read did (the second one finds
the row in the target state and matches nothing).

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

    Field names (not columns) everywhere; a value of :class:`Raw` is SQL.
    Returns the changed row as an unsaved-looking model instance (built from
    the returned columns: no second query), or ``None`` when no row matched.
    At most one row may match (callers filter on a unique column).
    """
    opts = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    sets: list[str] = []
    params: list[Any] = []
    for name, value in assignments.items():
        field = opts.get_field(name)
        column = quote(field.column)
        if isinstance(value, Raw):
            sets.append(f"{column} = {value.template.format(column=column)}")
            params.extend(field.get_db_prep_save(p, connection) for p in value.params)
        else:
            sets.append(f"{column} = %s")
            params.append(field.get_db_prep_save(value, connection))
    conditions: list[str] = []
    for name, value in where.items():
        field = opts.get_field(name)
        conditions.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_value(value, connection))
    for name, values in where_in.items():
        field = opts.get_field(name)
        values = sorted(values)
        conditions.append(f"{quote(field.column)} IN ({', '.join(['%s'] * len(values))})")
        params.extend(field.get_db_prep_value(v, connection) for v in values)
    fields = opts.concrete_fields
    # Identifiers are quoted model metadata, values are parameters.
    sql = (
        f"UPDATE {quote(opts.db_table)} SET {', '.join(sets)} "  # noqa: S608
        f"WHERE {' AND '.join(conditions)} "
        f"RETURNING {', '.join(quote(f.column) for f in fields)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if not rows:
        return None
    if len(rows) > 1:  # pragma: no cover - callers match on a unique column
        raise RuntimeError(f"{opts.label}: a conditional update matched {len(rows)} rows")
    values = []
    for field, value in zip(fields, rows[0], strict=True):
        expression = field.get_col(opts.db_table)
        for converter in connection.ops.get_db_converters(expression) + field.get_db_converters(
            connection
        ):
            value = converter(value, expression, connection)
        values.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], values)
