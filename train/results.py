"""The results table: every run's test metric beside its baseline and the published anchor.

    recdeploy evaluate --runs runs/*          # prints the table, writes docs/results.md

Rows come from checkpoint cards (``<run>/checkpoint/card.json``); anchors are the numbers
of /shared/ANCHORS.md, matched on (protocol family, dataset), so a number is only ever set
beside one measured the same way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Anchor:
    task: str        # the registered task whose protocol the number was measured under
    dataset: str
    metric: str      # the card's metric key
    model: str
    value: float
    source: str


ANCHORS: tuple[Anchor, ...] = (
    Anchor("rating", "ml-100k", "rmse", "SVD (biased MF)", 0.934, "Surprise README, 5-fold CV"),
    Anchor("rating", "ml-100k", "rmse", "SVD++", 0.919, "Surprise README, 5-fold CV"),
    Anchor("rating", "ml-1m", "rmse", "SVD (biased MF)", 0.873, "Surprise README, 5-fold CV"),
    Anchor("rating", "ml-1m", "rmse", "SVD++", 0.862, "Surprise README, 5-fold CV"),
    Anchor("retrieval_random", "ml-1m", "ndcg@10", "BPR-MF", 0.2407, "RecBole general benchmark"),
    Anchor("retrieval_random", "ml-1m", "ndcg@10", "NeuMF", 0.2287, "RecBole general benchmark"),
    Anchor("sequential", "ml-1m", "hr@10", "SASRec", 0.2468, "RecBole sequential benchmark"),
    Anchor("sequential", "ml-1m", "ndcg@10", "SASRec", 0.1286, "RecBole sequential benchmark"),
    Anchor("ctr", "ml-1m", "auc", "DCN-v2", 0.8998, "RecBole context benchmark"),
)

# tasks measured like another's anchors: the rating anchors are 5-fold CV numbers, which
# rating_cv reproduces exactly and rating (one 80/10/10 split) approximates
SAME_ANCHORS = {"rating_cv": "rating"}

# the headline metric per task (lower is better for RMSE)
HEADLINE = {"rating": "rmse", "rating_cv": "rmse", "retrieval_random": "ndcg@10", "retrieval_loo": "ndcg@10"}


@dataclass(frozen=True)
class ResultRow:
    model: str
    dataset: str
    protocol: str
    metric: str
    ours: float
    baseline: str            # "name value", the strongest baseline the card has
    anchors: str             # "model value (source); ..." or "—"
    train_seconds: float
    run: str


def _task(card: dict) -> str:
    """The card's own task (cards since per-run tasks), else the model's registered one."""
    from recdeploy.train.models import MODELS
    if card.get("task"):
        return card["task"]
    entry = MODELS.get(card["model"])
    return entry.task if entry is not None else ""


def row_from_card(card: dict, run: str = "") -> ResultRow:
    task = _task(card)
    test = card["metrics"]["test"]
    metric = HEADLINE.get(task) or next(k for k, v in test.items() if isinstance(v, float))
    lower_better = metric == "rmse"
    baselines = [(name.replace("_", "-"), b["test"][metric])
                 for name, b in card.get("baselines", {}).items() if metric in b.get("test", {})]
    best = (min if lower_better else max)(baselines, key=lambda b: b[1]) if baselines else None
    family = SAME_ANCHORS.get(task, task)
    anchors = [a for a in ANCHORS if (a.task, a.dataset, a.metric) == (family, card["dataset"], metric)]
    return ResultRow(
        model=card["model"], dataset=card["dataset"], protocol=f"{card['split']}; {card['protocol']}",
        metric=metric, ours=float(test[metric]),
        baseline=f"{best[0]} {best[1]:.4f}" if best else "—",
        anchors="; ".join(f"{a.model} {a.value:g} ({a.source})" for a in anchors) or "—",
        train_seconds=float(card.get("train_seconds", 0.0)), run=run)


def load_rows(runs: list[Path]) -> list[ResultRow]:
    rows = []
    for run in runs:
        card_path = Path(run) / "checkpoint" / "card.json"
        if card_path.is_file():
            rows.append(row_from_card(json.loads(card_path.read_text()), str(run)))
    return sorted(rows, key=lambda r: (r.dataset, r.metric, r.model))


def markdown_table(rows: list[ResultRow]) -> str:
    lines = ["| model | dataset | metric (test) | ours | best baseline | published anchor | train time | protocol |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.dataset} | {r.metric} | **{r.ours:.4f}** | {r.baseline} | "
                     f"{r.anchors} | {r.train_seconds / 60:.1f} min | {r.protocol} |")
    return "\n".join(lines)


def results_document(rows: list[ResultRow]) -> str:
    return "\n".join([
        "# Results", "",
        "Written by `recdeploy evaluate --runs runs/*` from the runs' checkpoint cards; each",
        "number is the test split of that run. Anchors are published numbers measured under the",
        "same data and protocol family (see the protocol column and the notes); baselines are",
        "measured by the same code on the same split. Train time is wall-clock on the machine",
        "that trained the run.", "",
        markdown_table(rows), "",
        "Notes on comparability:", "",
        "- rating: one random 80/10/10 split (the 10% validation drives early stopping);",
        "  Surprise's anchors average 5-fold CV, whose training folds are also 80% of the ratings.",
        "  rating_cv is that 5-fold CV: per fold, 1/8 of the four training folds chooses the",
        "  epoch count, then the model is refit on all four (80%); the mean over folds is shown",
        "  (ML-1M: 0.8550, fold std 0.0010; without the refit, on 70%: 0.8605).",
        "- retrieval_random: ratings >= 3 as positives, random 8:1:1 per user, full ranking, as",
        "  in RecBole's general ml-1m benchmark; our catalogue keeps every ML-1M movie (3,883),",
        "  RecBole's only those with a kept rating, which makes ours slightly harder.",
        "- retrieval_random, two_tower: the id-only towers trained under this protocol with",
        "  `--task retrieval_random --lr 0.001 --weight-decay 0 --epochs 30 --patience 3`;",
        "  two_tower_features uses its registered defaults (dim 128, lr 0.001, no weight decay).",
        "  Their train times (13.3 and 17.8 min) were taken while another training job shared",
        "  the 2 cores; they were not re-measured alone.",
        "- retrieval_random, neumf: the registered defaults pretrain the GMF branch on the",
        "  exact softmax (best epoch 11), then train both branches on a 256-negative sampled",
        "  softmax (MLP width 16). The joint epochs lowered validation NDCG@10, so early",
        "  stopping kept the pretrained model: the 0.2404 is NeuMF's GMF half, its MLP branch's",
        "  output weights zero. The earlier BCE recipe (dim 32, 4 negatives) gave 0.2007.",
        "- sequential: the ml-1m SASRec card is a CPU run with the registered defaults (15",
        "  cosine-annealed epochs at batch 32, sized for 15 minutes on 2 cores: 11.7 min,",
        "  NDCG@10 0.1140, below the 0.1286 anchor; with the user's history masked, as serving",
        "  does, 0.1617). Batch 128 with 13 epochs in 14.5 min gave 0.1008; 40 cosine epochs",
        "  at batch 32 with dropout 0.2 (36 min) gave 0.1109. Longer batch-128 schedules",
        "  (dropout 0.2, lr 0.005) were stopped while still creeping up: constant lr at",
        "  validation NDCG@10 0.1163 after 31 epochs, cosine over 60 epochs at 0.1173 after 39",
        "  (~75 s an epoch on one thread). Dim 128 at lr 0.002 (other defaults) reached",
        "  0.1219 / 0.2342 (masked 0.1668) in 19.6 min, over the budget. The 15- and",
        "  40-epoch models put 3.6-3.9 already-seen items in their unmasked top 10 on average",
        "  (98-99% of users get at least one): that is the gap to the masked number. The",
        "  same model on an H200 (batch 128, 30 constant-lr epochs, best 26; a copy of the",
        "  epoch loop, not `recdeploy train`) reached HR@10 0.2524 / NDCG@10 0.1330.",
        "  An output table of its own (`--output-embedding separate --lr 0.002`, the paper's",
        "  unshared-embedding ablation; 11.1 min) puts fewer seen items in the top 10 (3.1):",
        "  NDCG@10 0.1196 but HR@10 0.2170, and with the history masked only 0.1479 / 0.2599,",
        "  so the shared table stays the default. The shared table at lr 0.002 gave 0.1111 /",
        "  0.2191 (masked 0.1574); the shared table plus a learned per-item output offset",
        "  (zero at the start, lr 0.003) 0.1142 / 0.2185 (masked 0.1545), though its",
        "  validation NDCG@10 was higher (0.1214 against 0.1143).",
        "- ctr: DCN-v2's registered defaults (--dim 16 --lr 0.005 --weight-decay 1e-5",
        "  --batch-size 2048 --epochs 6 --patience 1) give 0.9006; the generic ones 0.8859.",
        ""])
