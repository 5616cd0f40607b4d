"""Imports inside the package flow one way, with no cycles.

Layers, lowest first; a module may import its own layer and the ones below:

1. foundation: settings, states, money, exceptions, models, signals, hooks;
2. ``gateway``: talks to Stripe; ``simulation``: simulates it;
3. ``services``: the use cases;
4. ``webhooks``: turns Stripe's events into service calls;
5. ``api``, ``admin``, ``management``, ``urls``: the surfaces that compose them;
   ``apps`` and ``checks`` too (the system checks inspect the configured gateway).

Every import counts, including those inside functions (only ``if
TYPE_CHECKING:`` blocks are exempt), and so does a module path written as a
string for ``importlib``: a lower layer reaching up by name is the same
dependency, hidden.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "django_escrow_connect"
NAME = "django_escrow_connect"
LAYERS = {
    "gateway": 2,
    "simulation": 2,
    "services": 3,
    "webhooks": 4,
    "api": 5,
    "admin": 5,
    "management": 5,
}
#: ``testing`` is the host's test kit: it composes the services like a surface does.
LAYERS |= {"urls": 5, "templatetags": 5, "testing": 5, "pytest_plugin": 5, "factories": 5}
#: The app config and its system checks inspect every layer (the configured
#: gateway is checked against the gateway protocol), like a surface.
LAYERS |= {"apps": 5, "checks": 5}
#: The periodic jobs as tasks compose services and webhooks, like the commands;
#: contrib adapts third-party engines and may be used by any surface.
LAYERS |= {"tasks": 5, "contrib": 5}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 1) if len(parts) > 1 else 1


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for child in ast.walk(node)}
    return skipped


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    targets: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets += [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(NAME + ".")
            and node.value.replace(".", "").replace("_", "").isalnum()
        ):
            targets.append(node.value)  # a module named for importlib / import_string
    found = set()
    for target in targets:
        while target and target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known and target != module:
            found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports_of(module, path, known) for module, path in known.items()}


#: Named by string on purpose: defaults of settings a host overrides (the
#: setting, not an import, is the dependency). Each entry says why.
STRING_REFERENCES_ALLOWED = {
    # ESCROW_CONNECT defaults name the package's own hooks and backends.
    ("django_escrow_connect.conf", "django_escrow_connect.terms"),
    ("django_escrow_connect.conf", "django_escrow_connect.fees"),
    ("django_escrow_connect.conf", "django_escrow_connect.permissions"),
    ("django_escrow_connect.conf", "django_escrow_connect.notifications.backends"),
    ("django_escrow_connect.conf", "django_escrow_connect.gateway.stripe_gateway"),
    ("django_escrow_connect.conf", "django_escrow_connect.webhooks.receiver"),
    ("django_escrow_connect.conf", "django_escrow_connect.webhooks"),
    ("django_escrow_connect.conf", "django_escrow_connect.gateway"),
    ("django_escrow_connect.conf", "django_escrow_connect.accounts"),
    # The system check compares the configured gateway with these dotted paths.
    ("django_escrow_connect.checks", "django_escrow_connect.gateway.simulated"),
    ("django_escrow_connect.checks", "django_escrow_connect.simulation"),
}


def test_no_lower_layer_imports_a_higher_one():
    upward = sorted(
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module) and (module, target) not in STRING_REFERENCES_ALLOWED
    )
    assert not upward, "imports that reach up a layer:\n" + "\n".join(
        f"  {module} -> {target}" for module, target in upward
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    edges = {
        module: {t for t in targets if (module, t) not in STRING_REFERENCES_ALLOWED}
        for module, targets in graph().items()
    }
    assert cycles(edges) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected
