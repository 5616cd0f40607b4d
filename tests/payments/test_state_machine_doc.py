"""docs/state-machine.md draws exactly the transitions the models declare."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from django_escrow_connect import swappable

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
EDGE = re.compile(r"^\s*(\w+) --> (\w+) : (\w+)\s*$")


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
