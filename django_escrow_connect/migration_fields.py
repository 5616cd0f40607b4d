"""The status field this package's migrations use: django-fsm-2's ``FSMField``
without its transition collector on historical models.

``FSMField.contribute_to_class`` connects a ``class_prepared`` receiver for
the field (it collects the model's ``@transition`` methods once the class is
ready) and never disconnects it. Migrations render historical models again
and again (every operation's state, every app's), so a ``migrate`` of this
package's migrations left hundreds of them connected, and every model
rendered after that called them all: a fresh database's ``migrate`` (and
each test database a host creates) took 2.2-2.4x as long as with this field
(``benchmarks/migrate.py``, docs/performance.md). A historical model keeps
fields, not methods, so the receiver has nothing to collect there: this
field disconnects it as soon as it is connected, on historical models only
(module ``__fake__``), and records the empty set of transitions it would
have found.

It deconstructs as ``django_fsm.FSMField``: the autodetector sees the same
field as the models' (no ``makemigrations`` for anyone), and migrations
written later name ``django_fsm.FSMField`` as before (``squashmigrations``
too: a squashed migration loses the saving unless edited back). A host may
use it in its own migrations' ``FSMField`` columns for the same saving
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models.signals import class_prepared
from django_fsm import FSMField

__all__ = ["HistoricalFSMField"]

#: Where the field deconstructs to: the models' own field.
FSM_FIELD_PATH = "django_fsm.FSMField"


class HistoricalFSMField(FSMField):
    """``FSMField`` for migration files (see the module's docstring)."""

    def contribute_to_class(
        self, cls: Any, name: str, private_only: bool = False, **kwargs: Any
    ) -> None:
        super().contribute_to_class(cls, name, private_only=private_only, **kwargs)
        if cls.__module__ == "__fake__":
            # Historical models have no transition methods to collect: drop
            # the receiver and record the nothing it would have found
            # (get_all_<field>_transitions reads it in a data migration).
            class_prepared.disconnect(self._collect_transitions)
            self.transitions[cls] = {}

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()
        return name, FSM_FIELD_PATH, args, kwargs
