"""Only orchestrator/jobs/lifecycle.py changes a job's state (issue 15, item 1).

The store's writing functions (a transition, the intake's group insert and its ending of
set-aside rows) are called from the lifecycle alone; every other module goes through it, so
each transition and its folder move have one place. Read from the code's syntax tree.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: (module alias as the code imports it, function): the store's state-changing calls.
WRITERS = {("store", "transition"), ("records", "record"), ("records", "finish")}
ALLOWED = {ROOT / "orchestrator" / "jobs" / "lifecycle.py"}


def state_changes_in(path: Path) -> list[str]:
    """``line alias.function`` for each call of a store writer in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in WRITERS):
            found.append(f"{node.lineno} {node.func.value.id}.{node.func.attr}")
    return found


def test_the_finder_sees_a_transition(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    x = 1\n    store.transition('id', 'failed')\n")
    assert state_changes_in(sample) == ["3 store.transition"]


def test_no_module_but_the_lifecycle_changes_a_jobs_state() -> None:
    sources = [p for package in ("orchestrator", "tasks", "cli")
               for p in (ROOT / package).rglob("*.py")
               if p not in ALLOWED and "store" not in p.relative_to(ROOT).parts]
    assert [f"{path.relative_to(ROOT)}:{hit}" for path in sources
            for hit in state_changes_in(path)] == []
