"""compress reaches train's tasks through their public protocol API only."""
import ast
from pathlib import Path

import pytest

COMPRESS = Path(__file__).resolve().parents[2] / "compress"


def imports_from_train(path: Path) -> list[tuple[str, str, bool]]:
    """(module, name, at module top) for every ``from recdeploy.train... import name``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    return [(node.module, alias.name, id(node) in top) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
            and node.module.startswith("recdeploy.train")
            for alias in node.names]


@pytest.mark.parametrize("family", ["two_tower.py", "dcn_v2.py"])
def test_families_import_no_private_task_helpers_and_only_at_module_top(family):
    imported = imports_from_train(COMPRESS / family)
    task_names = [(module, name) for module, name, _ in imported if module.startswith("recdeploy.train.tasks")]
    assert ("recdeploy.train.tasks", "protocol") in task_names
    assert not [name for _, name in task_names if name.startswith("_")]
    # the ctr task's internals stay inside it: only the protocol's own types cross over
    assert {name for module, name in task_names if module == "recdeploy.train.tasks.ctr"} <= {"CtrBatch", "CtrProtocol"}
    assert [(m, n) for m, n, top in imported if not top and m.startswith("recdeploy.train.tasks")] == []
