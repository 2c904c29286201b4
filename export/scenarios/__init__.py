"""The scenario registry: ``@register_scenario("retrieval")`` on a ``Scenario`` subclass.

    scenario = scenario_named("sequential")                  # a miss lists the valid names
    scenario = scenario_for({"run": "two_tower", "ranker": "dcn_v2"})   # -> multistage
    scenario, entry = scenario_of(Path("model_repository"), "recommend_next")

A new scenario is one new module in this package: every module here is imported on first
use, and its class registers itself. ``recdeploy scenarios`` lists them with their contracts.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path

from recdeploy.export.scenarios.base import (
    Answer,
    Contract,
    DemoRun,
    Entry,
    ExportJob,
    ExportReport,
    Pipeline,
    Requests,
    Scenario,
    ScenarioError,
    entries_of,
    read_metadata,
)

__all__ = ["Answer", "Contract", "DemoRun", "Entry", "ExportJob", "ExportReport", "Pipeline", "Requests",
           "Scenario", "ScenarioError", "SCENARIOS", "register_scenario", "scenario_named",
           "scenario_for", "scenario_of", "entries_of", "read_metadata"]

SCENARIOS: dict[str, Scenario] = {}


class UnknownScenarioError(ScenarioError):
    pass


def register_scenario(name: str):
    def decorator(cls: type[Scenario]) -> type[Scenario]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        cls.name = name
        SCENARIOS[name] = cls()
        return cls
    return decorator


def scenario_named(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise UnknownScenarioError(f"unknown scenario {name!r}; valid: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name]


def scenario_for(models: Mapping[str, str]) -> Scenario:
    """The one scenario that exports runs of these models (role -> model name)."""
    fits = [s for s in SCENARIOS.values() if set(s.roles) == set(models) and s.handles(models)]
    if len(fits) != 1:
        given = ", ".join(f"{role}={model}" for role, model in models.items())
        options = "; ".join(f"{s.name} ({', '.join(s.roles)})" for s in SCENARIOS.values())
        found = "no scenario" if not fits else f"several scenarios ({', '.join(s.name for s in fits)})"
        raise UnknownScenarioError(f"{found} exports {given}; scenarios and the runs they take: {options}")
    return fits[0]


def scenario_of(repo: Path, entry: str) -> tuple[Scenario, Entry]:
    """The scenario serving ``entry`` in an exported repository, and the entry's record."""
    entries = entries_of(repo)
    if entry not in entries:
        raise ScenarioError(f"{repo} has no entry {entry!r}; it serves: {', '.join(entries)}")
    return scenario_named(entries[entry].scenario), entries[entry]


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()
