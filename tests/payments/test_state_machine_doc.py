"""docs/state-machine.md draws exactly the transitions the models declare,
and its table of who may ask for a transition names exactly the declared
``permission=`` of each. ``python tests/payments/test_state_machine_doc.py``
prints the rows the permission table must have."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "state-machine.md"
EDGE = re.compile(r"^\s*(\w+) --> (\w+) : (\w+)\s*$")
PERMISSION_ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \|")
PERMISSION_SECTION = "### Who may ask for a transition"


def mermaid_blocks() -> list[list[tuple[str, str, str]]]:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(), flags=re.S)
    edges = []
    for block in blocks:
        found = []
        for line in block.splitlines():
            if "[*]" in line or "-->" not in line:
                continue
            match = EDGE.match(line)
            assert match, f"unreadable diagram line: {line!r}"
            found.append(match.groups())
        edges.append(found)
    return edges


def declared(model, field_name):
    """{(source, name): allowed targets} from the model's FSM field."""
    field = model._meta.get_field(field_name)
    transitions = {}
    for transition in field.get_all_transitions(model):
        target = transition.target
        allowed = getattr(target, "allowed_states", None) or (target,)
        transitions[(str(transition.source), transition.name)] = {str(s) for s in allowed}
    return transitions


@pytest.mark.parametrize(
    ("index", "model_name", "field_name"),
    [(0, "EscrowPayment", "status"), (1, "Task", "payment_status")],
)
def test_the_diagram_matches_the_transitions(index, model_name, field_name):
    from django_escrow_connect import swappable

    transitions = declared(swappable.load(model_name), field_name)
    edges = mermaid_blocks()[index]
    assert len(edges) == len(set(edges)), "an arrow is drawn twice"
    drawn = {(source, name) for source, _, name in edges}
    missing = sorted(set(transitions) - drawn)
    assert not missing, f"transitions missing from docs/state-machine.md: {missing}"
    for source, target, name in edges:
        assert (source, name) in transitions, f"{source} --> {target} : {name} is not declared"
        assert target in transitions[(source, name)], (
            f"{name} cannot lead from {source} to {target}"
        )


def documented_permissions() -> dict[str, str]:
    """``{transition: permission function}`` from the doc's "who may" table."""
    section = DOC.read_text().split(PERMISSION_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [PERMISSION_ROW.match(line) for line in section.splitlines()]
    return {row.group(1): row.group(2) for row in rows if row}


def declared_permissions() -> dict[str, str]:
    """``{transition: permission function}`` for the payment's transitions that declare one."""
    from django_escrow_connect import swappable

    model = swappable.load("EscrowPayment")
    found = {}
    for transition in model._meta.get_field("status").get_all_transitions(model):
        if transition.permission is not None:
            found[transition.name] = transition.permission.__name__
    return found


def test_the_permission_table_names_each_declared_permission():
    assert documented_permissions() == declared_permissions()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    for name, permission in declared_permissions().items():
        sys.stdout.write(f"| `{name}` | `{permission}` | (who) | (endpoint) |\n")
