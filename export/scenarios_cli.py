"""``recdeploy scenarios``: every scenario, the runs it exports from, and its served contracts.

    recdeploy scenarios
    recdeploy scenarios --repository model_repository      # what an export serves, by entry
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdeploy.export.scenarios import SCENARIOS, ScenarioError, entries_of
from recdeploy.export.triton_config import TensorSpec


def tensor_text(tensor: TensorSpec) -> str:
    dims = ",".join("N" if d == -1 else str(d) for d in tensor.dims)
    return f"{tensor.name} {tensor.dtype} [B,{dims}]"


def describe_scenarios() -> str:
    lines = []
    for name, scenario in sorted(SCENARIOS.items()):
        lines += [f"{name}: {scenario.summary}", f"  exports from: {' + '.join(f'--{r}' for r in scenario.roles)}"]
        for contract in scenario.contracts():
            lines += [f"  {contract.entry}",
                      f"    in:    {', '.join(tensor_text(t) for t in contract.inputs)}",
                      f"    out:   {', '.join(tensor_text(t) for t in contract.outputs)}",
                      f"    steps: {' -> '.join(contract.steps)}"]
            if contract.seen_items:
                lines.append(f"    seen items: {contract.seen_items}")
            if contract.notes:
                lines.append(f"    notes: {contract.notes}")
        lines.append("")
    return "\n".join(lines)


def describe_repository(repo: Path) -> str:
    lines = [f"{repo}:"]
    for entry in entries_of(repo).values():
        extra = f" (variant of {entry.variant_of})" if entry.variant_of else ""
        lines.append(f"  {entry.name:<28} scenario {entry.scenario}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy scenarios", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=None,
                        help="list the entries of this exported repository instead")
    args = parser.parse_args(argv)
    try:
        print(describe_repository(args.repository) if args.repository else describe_scenarios())
    except ScenarioError as err:
        print(f"recdeploy scenarios: {err}", file=sys.stderr)
        return 2
    return 0
