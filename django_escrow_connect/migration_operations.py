"""Migration operations that move a field's index without rebuilding it.

Django gives a ``CharField`` with ``unique=True`` or ``db_index=True`` a second,
``varchar_pattern_ops`` index on PostgreSQL (``..._like``), useful only for
``LIKE 'prefix%'``, and every index costs a write on each insert and non-HOT
update. Declaring the same uniqueness or index in ``Meta.constraints`` /
``Meta.indexes`` creates no ``_like`` index, but the autodetector's plan
(``AlterField`` then ``AddConstraint``/``AddIndex``) builds a new index under an
``ACCESS EXCLUSIVE`` lock, and for a foreign key ``AlterField(db_index=False)``
drops and re-validates the foreign key constraint: minutes of blocked writes on
a big table.

These operations record the same model state as the autodetector's plan, but on
PostgreSQL they rename the existing index (or unique constraint) to its new name
and drop the ``_like`` index: catalog changes only, no table scan, and the
column is never without its unique index. Other databases run the plain plan,
the new index or constraint first.

Hosts whose swapped models get the new ``Meta`` from the abstract models may
use them in their own migration in place of what makemigrations writes (see
docs/upgrading.md).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.operations import AddConstraint, AddIndex, AlterField
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState

__all__ = ["DropForeignKeyIndex", "IndexToMeta", "UniqueToConstraint"]


class _FieldIndexOperation(Operation):
    """Shared plumbing: the state change is ``AlterField`` plus ``added`` (if any)."""

    reversible = True

    def __init__(self, model_name: str, name: str, field: models.Field[Any, Any]) -> None:
        self.model_name = model_name
        self.name = name
        self.field = field
        self.alter = AlterField(model_name=model_name, name=name, field=field)

    def _added(self) -> Operation | None:
        return None

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        self.alter.state_forwards(app_label, state)
        added = self._added()
        if added is not None:
            added.state_forwards(app_label, state)

    @property
    def model_name_lower(self) -> str:
        return self.model_name.lower()

    def references_model(self, name: str, app_label: str) -> bool:
        return self.alter.references_model(name, app_label)

    def references_field(self, model_name: str, name: str, app_label: str) -> bool:
        return self.alter.references_field(model_name, name, app_label)

    def _models(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> tuple[Any, Any] | None:
        to_model = to_state.apps.get_model(app_label, self.model_name)
        if not self.allow_migrate_model(schema_editor.connection.alias, to_model):
            # A swapped-out model has no table of its own.
            return None
        return from_state.apps.get_model(app_label, self.model_name), to_model

    def _column_indexes(
        self, schema_editor: BaseDatabaseSchemaEditor, model: Any, column: str, **kind: Any
    ) -> list[str]:
        """Names of the indexes/constraints on exactly ``column`` matching ``kind``."""
        with schema_editor.connection.cursor() as cursor:
            found = schema_editor.connection.introspection.get_constraints(
                cursor, model._meta.db_table
            )
        return sorted(
            name
            for name, info in found.items()
            if info["columns"] == [column] and all(info.get(k) == v for k, v in kind.items())
        )

    def _like_index_name(self, schema_editor: BaseDatabaseSchemaEditor, model: Any) -> str:
        """The name Django's PostgreSQL schema editor gave the field's ``_like`` index."""
        column = model._meta.get_field(self.name).column
        editor: Any = schema_editor  # _create_index_name is not in the stubs
        return str(editor._create_index_name(model._meta.db_table, [column], suffix="_like"))

    def _drop_like_index(self, schema_editor: BaseDatabaseSchemaEditor, model: Any) -> None:
        like = self._like_index_name(schema_editor, model)
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(like)}")

    def _rename(
        self, schema_editor: BaseDatabaseSchemaEditor, model: Any, new_name: str, **kind: Any
    ) -> bool:
        """Rename the column's one index matching ``kind``; False when there is not exactly one."""
        column = model._meta.get_field(self.name).column
        like = self._like_index_name(schema_editor, model)
        names = [n for n in self._column_indexes(schema_editor, model, column, **kind) if n != like]
        if len(names) != 1:
            return False
        quote = schema_editor.quote_name
        if kind.get("unique"):
            schema_editor.execute(
                f"ALTER TABLE {quote(model._meta.db_table)} "
                f"RENAME CONSTRAINT {quote(names[0])} TO {quote(new_name)}"
            )
        else:
            schema_editor.execute(f"ALTER INDEX {quote(names[0])} RENAME TO {quote(new_name)}")
        return True

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        found = self._models(app_label, schema_editor, from_state, to_state)
        if found is None:
            return
        from_model, to_model = found
        if schema_editor.connection.vendor == "postgresql" and self._forwards_in_place(
            schema_editor, to_model
        ):
            return
        # Elsewhere (or an unexpected schema): the new index first, so the
        # column is never without one, then the field loses its own.
        added = self._added()
        if added is not None:
            added.database_forwards(app_label, schema_editor, from_state, to_state)
        schema_editor.alter_field(
            to_model,
            from_model._meta.get_field(self.name),
            to_model._meta.get_field(self.name),
        )

    def _forwards_in_place(self, schema_editor: BaseDatabaseSchemaEditor, model: Any) -> bool:
        """Do the change by renaming/dropping on PostgreSQL; False: Django's plan instead.

        Every operation below overrides it; without an override the safe
        answer is Django's own (rebuilding) plan.
        """
        return False

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        # Rare and not on a hot path: Django's own plan, which rebuilds.
        found = self._models(app_label, schema_editor, to_state, from_state)
        if found is None:
            return
        previous, current = found
        # The Meta index goes first: on SQLite altering the field rebuilds the
        # table from the previous state, which no longer has it.
        added = self._added()
        if added is not None:
            added.database_backwards(app_label, schema_editor, from_state, to_state)
        schema_editor.alter_field(
            previous,
            current._meta.get_field(self.name),
            previous._meta.get_field(self.name),
        )


class _MoveToMeta(_FieldIndexOperation):
    """The field's own index becomes a ``Meta`` constraint or index, renamed in place.

    Subclasses name the keyword their target travels under (``constraint`` or
    ``index``: what the migration file passes) and whether it is unique.
    """

    target_kwarg = ""
    unique = False

    def _target(self) -> Any:
        return getattr(self, self.target_kwarg)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {
            "model_name": self.model_name,
            "name": self.name,
            "field": self.field,
            self.target_kwarg: self._target(),
        }
        return self.__class__.__name__, [], kwargs

    def _forwards_in_place(self, schema_editor: BaseDatabaseSchemaEditor, model: Any) -> bool:
        # RENAME CONSTRAINT renames its index too: the uniqueness is never absent.
        name = str(self._target().name)
        if not self._rename(schema_editor, model, name, unique=self.unique, index=not self.unique):
            return False
        self._drop_like_index(schema_editor, model)
        return True


class UniqueToConstraint(_MoveToMeta):
    """``unique=True`` on ``name`` becomes the single-column ``constraint``."""

    target_kwarg = "constraint"
    unique = True

    def __init__(
        self,
        model_name: str,
        name: str,
        field: models.Field[Any, Any],
        constraint: models.UniqueConstraint,
    ) -> None:
        super().__init__(model_name, name, field)
        self.constraint = constraint

    def _added(self) -> Operation:
        return AddConstraint(model_name=self.model_name, constraint=self.constraint)

    def describe(self) -> str:
        return f"Move unique {self.model_name}.{self.name} to constraint {self.constraint.name}"


class IndexToMeta(_MoveToMeta):
    """``db_index=True`` on ``name`` becomes the single-column ``index``."""

    target_kwarg = "index"

    def __init__(
        self, model_name: str, name: str, field: models.Field[Any, Any], index: models.Index
    ) -> None:
        super().__init__(model_name, name, field)
        self.index = index

    def _added(self) -> Operation:
        return AddIndex(model_name=self.model_name, index=self.index)

    def describe(self) -> str:
        return f"Move the index of {self.model_name}.{self.name} to {self.index.name}"


class DropForeignKeyIndex(_FieldIndexOperation):
    """A foreign key loses its own index (``db_index=False``): a composite leads with it.

    Only the index goes; the foreign key constraint is neither dropped nor
    re-validated.
    """

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {"model_name": self.model_name, "name": self.name, "field": self.field}
        return self.__class__.__name__, [], kwargs

    def describe(self) -> str:
        return f"Drop the single-column index of {self.model_name}.{self.name}"

    def _forwards_in_place(self, schema_editor: BaseDatabaseSchemaEditor, model: Any) -> bool:
        column = model._meta.get_field(self.name).column
        declared = {str(index.name) for index in model._meta.indexes}
        names = [
            name
            for name in self._column_indexes(schema_editor, model, column, index=True, unique=False)
            if name not in declared
        ]
        # None: already gone (nothing to do, and the fallback would re-validate
        # the foreign key); several: not a schema this package made.
        if len(names) > 1:
            return False
        for name in names:
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")
        return True
