"""The architecture stays easy to see: stages depend one way, at module top, in small modules.

train <- compress <- export <- clients <- serve <- perf (<- the recdeploy package: cli, demo).
A later stage may import an earlier one, never the reverse; imports between stages sit at
module top so the graph is visible to a reader and to tools, except the few heavy optional
ones listed in LAZY. Read from the source with ``ast``, so the check needs no import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["train", "compress", "export", "clients", "serve", "perf", "recdeploy"]
RANK = {stage: rank for rank, stage in enumerate(ORDER)}
# (module file, imported module): inner imports kept lazy on purpose, with the reason
LAZY: dict[tuple[str, str], str] = {}
MAX_LINES = 400


def stage_files():
    for stage in ORDER:
        folder = ROOT / stage
        for path in sorted(folder.rglob("*.py")):
            if stage == "recdeploy" and path.parent != folder:
                continue  # recdeploy/<stage> links to the stage folders, read once above
            yield stage, path


def cross_stage_imports(stage: str, path: Path):
    """(imported stage, imported module, line, at module top) for every recdeploy import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "recdeploy" or len(parts) < 2 or parts[1] not in RANK:
                continue
            if parts[1] != stage:
                yield parts[1], name, node.lineno, id(node) in top


def test_stages_import_each_other_one_way_only():
    backward = [f"{path.relative_to(ROOT)}:{line} imports {name} ({stage} may not depend on {target})"
                for stage, path in stage_files()
                for target, name, line, _ in cross_stage_imports(stage, path) if RANK[target] > RANK[stage]]
    assert not backward, "backward stage dependencies:\n" + "\n".join(backward)


def test_imports_between_stages_sit_at_module_top():
    hidden = [f"{path.relative_to(ROOT)}:{line} imports {name} inside a function"
              for stage, path in stage_files()
              for _, name, line, at_top in cross_stage_imports(stage, path)
              if not at_top and (str(path.relative_to(ROOT)), name) not in LAZY]
    assert not hidden, "move these imports to the top of their module (or into LAZY, with why):\n" + \
        "\n".join(hidden)


def test_modules_stay_small():
    big = [f"{path.relative_to(ROOT)}: {n} lines" for _, path in stage_files()
           if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not big, f"past ~{MAX_LINES} lines a module is two concepts; split these:\n" + "\n".join(big)


def test_the_checker_sees_a_backward_edge(tmp_path):
    source = tmp_path / "lab.py"
    source.write_text("import numpy\n\ndef f():\n    from recdeploy.perf.lab import run_lab\n")
    found = list(cross_stage_imports("export", source))
    assert found == [("perf", "recdeploy.perf.lab", 4, False)]


@pytest.mark.parametrize("stage", ORDER[:-1])
def test_every_stage_is_reachable_through_the_package(stage):
    link = ROOT / "recdeploy" / stage
    assert link.is_symlink() and link.resolve() == (ROOT / stage).resolve()
