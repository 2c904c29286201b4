"""What every scenario provides, and the repository metadata that ties entries to scenarios.

A scenario (retrieval, sequential, ranking, multi-stage, ...) is one module in this package
with one ``@register_scenario("name")`` class. It owns everything specific to it: its pure
Triton specs, building and exporting its artifacts with their parity checks, the in-process
reference pipeline of each entry it serves, the canary requests ``serve`` checks before
``ready``, perf_analyzer inputs built from real users and items, and the quality of served
answers. export, serve's canary, perf's lab and the demo only ever ask the scenario.

An *entry* is what a client calls: an ensemble (or a model that answers a contract by
itself). ``recdeploy.json`` at the repository root lists each entry with its scenario and
what its reference pipeline is made of, so any stage can find the scenario of any entry.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from recdeploy.export.compare import compare_answers, list_agreement
from recdeploy.export.repository import write_manifest
from recdeploy.export.triton_config import EnsembleSpec, TensorSpec
from recdeploy.train.checkpoint import Checkpoint
from recdeploy.train.data import Dataset

METADATA = "recdeploy.json"

Requests = dict[str, np.ndarray]        # input name -> [B, ...]
Answer = dict[str, np.ndarray]          # output name -> [B, ...]
Pipeline = Callable[[Requests], Answer]


class ScenarioError(ValueError):
    """A scenario cannot do what was asked (unknown name, wrong runs, no such entry, ...)."""


class ExportError(ScenarioError):
    """Trained runs that cannot be exported as asked (other data, a wrong size, ...)."""


@dataclass(frozen=True)
class Entry:
    """One entry point of an exported repository, as recorded in ``recdeploy.json``.

    reference: scenario-specific description of the in-process pipeline that must give the
    same answers (which scorer model, which runtime). variant_of: the full model's entry when
    this one serves a compressed variant. exact_ties: False where the runtime (torch.topk)
    promises no order among equal scores.
    """
    name: str
    scenario: str
    reference: dict = field(default_factory=dict)
    variant_of: str = ""
    exact_ties: bool = True

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "reference": self.reference,
                "variant_of": self.variant_of, "exact_ties": self.exact_ties}

    @classmethod
    def from_dict(cls, name: str, data: Mapping) -> Entry:
        return cls(name=name, scenario=data["scenario"], reference=dict(data.get("reference", {})),
                   variant_of=data.get("variant_of", ""), exact_ties=bool(data.get("exact_ties", True)))


# what a contract does with the items a user already bought or rated (Contract.seen_items)
SEEN_REMOVED = "removed"     # never recommended again (a movie seen, "you may like")
SEEN_KEPT = "kept"           # recommended again: repeat purchases (grocery next basket)
SEEN_POLICIES = (SEEN_REMOVED, SEEN_KEPT, "")   # "": not a per-user list (e.g. ranking given candidates)


@dataclass(frozen=True)
class Contract:
    """An entry's served contract, for ``recdeploy scenarios`` and the README."""
    entry: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[str, ...]
    notes: str = ""
    # the seen-item policy, a setting of each scenario's contract (SEEN_POLICIES)
    seen_items: str = ""

    @classmethod
    def of(cls, spec: EnsembleSpec, notes: str = "", seen_items: str = "", entry: str = "",
           steps: tuple[str, ...] = ()) -> Contract:
        """The contract of an ensemble spec (its name, tensors and steps); ``entry`` / ``steps``
        name a variant's stand-ins (``rank_<variant>`` through ``ranker_<variant>``); no steps = the spec's."""
        return cls(entry or spec.name, spec.inputs, spec.outputs,
                   steps or tuple(step.model_name for step in spec.steps), notes, seen_items)

    def __post_init__(self):
        if self.seen_items not in SEEN_POLICIES:
            raise ScenarioError(f"contract {self.entry!r}: seen_items must be one of "
                                f"{', '.join(repr(p) for p in SEEN_POLICIES)}, got {self.seen_items!r}")


@dataclass(frozen=True)
class DemoRun:
    """What ``recdeploy demo --scenario NAME`` trains for one role: a model on a dataset, with
    the TrainConfig values that keep the whole demo within minutes on 2 cores."""
    model: str
    dataset: str = "ml-100k"
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportJob:
    """What ``recdeploy export`` hands a scenario: the repository to write, the trained runs
    by role (``run``, and e.g. ``ranker`` for the multi-stage scenario), their dataset and
    the scenario's options (e.g. ``candidates``)."""
    repo: Path
    runs: Mapping[str, Checkpoint]
    dataset: Dataset
    options: Mapping[str, Any] = field(default_factory=dict)

    def run(self, role: str = "run") -> Checkpoint:
        if role not in self.runs:
            raise ScenarioError(f"this export needs a {role!r} run; given: {', '.join(self.runs)}")
        return self.runs[role]


@dataclass(frozen=True)
class ExportReport:
    entries: tuple[str, ...]
    parity: dict[str, float]            # what was checked -> max |diff|
    notes: tuple[str, ...] = ()

    def summary(self, repo: Path) -> str:
        lines = [f"{check}: max |diff| {diff:.2e}" for check, diff in self.parity.items()]
        lines += list(self.notes)
        lines.append(f"model repository: {repo} (entries: {', '.join(self.entries)})")
        return "\n".join(lines)


class Scenario:
    """Base of every scenario; subclasses register with ``@register_scenario``."""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ("run",)      # the trained runs an export takes
    # its lookups read users' lists through recdeploy_store (export --feature-store redis://...)
    online_store: ClassVar[bool] = False

    def handles(self, models: Mapping[str, str]) -> bool:
        """Whether runs of these models (role -> registered model name) export as this scenario."""
        raise NotImplementedError

    def contracts(self) -> tuple[Contract, ...]:
        raise NotImplementedError

    def demo_runs(self) -> dict[str, DemoRun]:
        """The runs ``recdeploy demo --scenario`` trains, by role (one per ``roles``)."""
        raise ScenarioError(f"scenario {self.name!r} has no demo")

    def export(self, job: ExportJob) -> ExportReport:
        raise NotImplementedError

    def add_variant(self, repo: Path, onnx_path: Path, slug: str, info: dict | None = None) -> list[str]:
        """Serve a compressed variant beside the full model; returns the model names written."""
        raise ScenarioError(f"scenario {self.name!r} serves no compressed variants")

    def add_cached_tables(self, repo: Path, run: Checkpoint, capacity: int) -> ExportReport:
        """Serve the run's tables memory-mapped behind a cache of ``capacity`` hot rows, as a
        second entry beside the full one (``recdeploy export --cached-tables``)."""
        raise ScenarioError(f"scenario {self.name!r} serves no cached tables")

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        """The entry's pipeline in-process: the repository's own artifacts, the same code."""
        raise NotImplementedError

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        """A few request batches (real ids, a cold start, edge cases) served == reference on."""
        raise NotImplementedError

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        """``n`` single-row requests of real users / items stacked on axis 0, shuffled."""
        raise NotImplementedError

    def swappable_model(self, entry: Entry) -> str:
        """The model a retrained export replaces in a hot swap of this entry."""
        raise ScenarioError(f"scenario {self.name!r} names no model to hot-swap")

    def compare(self, got: Answer, want: Answer, entry: Entry, rows=None) -> float:
        return compare_answers(got, want, label=f"served {entry.name}", rows=rows,
                               exact_ties=entry.exact_ties)

    def quality(self, repo: Path, entry: Entry, ask: Pipeline, k: int = 10) -> dict[str, float]:
        """Quality of ``ask``'s answers (served or not): agreement of its top-K with the full
        model's reference on real requests (1.0 for an exact, uncompressed entry)."""
        full = entries_of(repo)[entry.variant_of] if entry.variant_of else entry
        requests = self.perf_rows(repo, entry, k, n=256, seed=1)
        # 64 rows a call: an exact reference over 10^7 items holds a [rows, items] score matrix
        return list_agreement(ask(requests)["ITEM_IDS"],
                              in_chunks(self.reference(repo, full), requests)["ITEM_IDS"])


# ------------------------------------------------------------------ repository metadata

def read_metadata(repo: Path) -> dict:
    path = Path(repo) / METADATA
    if not path.is_file():
        raise ScenarioError(f"{repo} is not an exported repository (no {METADATA}); "
                            "run `recdeploy export --run RUN --repository DIR` first")
    return json.loads(path.read_text())


def entries_of(repo: Path) -> dict[str, Entry]:
    """Every entry of an exported repository, in the order they were written."""
    meta = read_metadata(repo)
    if "entries" not in meta:
        raise ScenarioError(f"{repo} was exported by an older recdeploy (no entries in {METADATA}); "
                            "export it again")
    return {name: Entry.from_dict(name, data) for name, data in meta["entries"].items()}


def write_metadata(repo: Path, scenario: str, dataset: Dataset, entries: list[Entry], **fields) -> None:
    """Start ``recdeploy.json`` for a freshly exported repository and write its manifest."""
    meta = {"scenario": scenario, "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
            "ensembles": [e.name for e in entries], "entries": {e.name: e.to_dict() for e in entries},
            **fields}
    (Path(repo) / METADATA).write_text(json.dumps(meta, indent=2))
    write_manifest(repo)


def add_entries(repo: Path, entries: list[Entry], variant: str = "", info: dict | None = None,
                **fields) -> None:
    """Record entries (and a variant's info) in an exported repository; refresh the manifest."""
    meta = read_metadata(repo)
    for entry in entries:
        if entry.name not in meta.setdefault("ensembles", []):
            meta["ensembles"].append(entry.name)
        meta.setdefault("entries", {})[entry.name] = entry.to_dict()
    if variant:
        meta.setdefault("variants", {})[variant] = info or {}
    meta.update(fields)
    (Path(repo) / METADATA).write_text(json.dumps(meta, indent=2))
    write_manifest(repo)


def latest_version_dir(repo: Path, model: str) -> Path:
    """``<repo>/<model>/<N>`` for the highest N: what Triton's default version policy serves,
    so an in-process reference reads what the server serves, also after a hot swap."""
    model_dir = Path(repo) / model
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if model_dir.is_dir() else []
    if not versions:
        raise ScenarioError(f"{model_dir} has no version folder")
    return model_dir / str(max(versions))


# ------------------------------------------------------------------ the user top-K contract
# USER_ID INT64 [B,1], K INT32 [B,1] -> ITEM_IDS INT64 [B,K], SCORES FP32 [B,K]: shared by the
# scenarios that recommend to a user (retrieval, sequential, multi-stage)

def k_column(rows: int, k: int) -> np.ndarray:
    return np.full((rows, 1), k, dtype=np.int32)


def in_chunks(pipeline: Pipeline, requests: Requests, rows: int = 64) -> Answer:
    """``pipeline`` called on at most ``rows`` rows at a time, the answers concatenated."""
    n = len(next(iter(requests.values())))
    parts = [pipeline({name: value[i:i + rows] for name, value in requests.items()}) for i in range(0, n, rows)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def contract_pipeline(run) -> Pipeline:
    """A (USER_ID, K) -> (ITEM_IDS, SCORES) runner as a Pipeline over request dicts."""
    def pipeline(requests: Requests) -> Answer:
        ids, scores = run(requests["USER_ID"], requests["K"])
        return {"ITEM_IDS": ids, "SCORES": scores}
    return pipeline


def canary_users(user_ids: np.ndarray, n: int = 7) -> np.ndarray:
    """``n`` real ids spread over the table, plus one id past the largest (a cold start)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    picks = user_ids[np.linspace(0, len(user_ids) - 1, num=min(n, len(user_ids))).astype(int)]
    return np.append(np.unique(picks), user_ids.max() + 1)


def user_requests(users: np.ndarray, k: int) -> Requests:
    users = np.asarray(users, dtype=np.int64).reshape(-1, 1)
    return {"USER_ID": users, "K": k_column(len(users), k)}


def shuffled_user_rows(user_ids: np.ndarray, k: int, n: int, seed: int) -> Requests:
    """n real users (cycling when n exceeds them) in a seeded random order, one per row."""
    order = np.random.default_rng(seed).permutation(len(user_ids))
    users = np.resize(user_ids[order], n)
    return user_requests(users, k)


def check_fingerprint(card: Mapping | None, dataset: Dataset) -> None:
    """A checkpoint is exported only against the data it was trained on."""
    trained = (card or {}).get("dataset_fingerprint")
    if trained not in (None, dataset.fingerprint()):
        raise ExportError(f"checkpoint was trained on dataset fingerprint {trained}, "
                            f"but {dataset.name} now has {dataset.fingerprint()}")
