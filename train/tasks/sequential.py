"""Sequential ("watch next"): SASRec trained by full softmax, early-stopped on the validation item.

    recdeploy train --model sasrec --dataset ml-1m --out runs/sasrec-ml1m

Protocol (RecBole's sequential benchmark on ML-1M, the ANCHORS.md row): keep ratings >= 3,
then iterated 10-core (users and items with >= 10 of those ratings); per user, by time, the
last item is test and the one before is validation; the history for test is everything
before the test item (validation item included). Full ranking over every item of the
filtered catalogue, HR@10 and NDCG@10. RecBole's full-sort evaluation does *not* mask the
history for sequential models (``FullSortEvalDataLoader`` builds ``uid2history_item`` only
for non-sequential ones), so the headline numbers rank against all items; the card also
reports the variant with the user's history excluded (what serving does). The most-popular
baseline is scored both ways too.

Training: the whole training sequence of every user is cut into windows of ``max_len``
(from the most recent end), and every position predicts the next item with a full softmax
over the catalogue (a few thousand items: exact, no sampling bias). The first position of a
user's history is predicted from the empty history, which teaches the padding vector.

Hyper-parameters: SASRec's own defaults (``lr``, ``batch_size`` = windows per step,
``weight_decay``, ...) are registered with the model (``@register_model(..., defaults=)``) and
apply wherever the user gave no flag; the values used are written into the card under ``hparams``.

Speed on CPU: windows are batched with others of similar length and each batch is cut to its
longest real window (right-aligned, so only padding columns go: a padded column never
influences a real one, so the outputs are the same); the softmax is taken in chunks of
positions so no logits tensor outgrows the allocator's reusable heap, where fresh pages
would be faulted in every step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, filter_interactions
from recdeploy.train.loop import fit
from recdeploy.train.memory import keep_freed_memory
from recdeploy.train.metrics import RankingMetrics, evaluate_full_ranking, popularity_scorer
from recdeploy.train.models import build_model
from recdeploy.train.models.sasrec import PAD, SASRec, SASRecConfig
from recdeploy.train.tasks import TrainResult, register_task

MIN_RATING = 3
MIN_COUNT = 10
# positions per softmax chunk: 2048 x a few thousand items x 4 bytes stays under glibc's
# 32 MB mmap threshold, so chunks are recycled from the heap instead of faulted in fresh
SOFTMAX_CHUNK = 2048
# windows are sorted by length within pools of this many batches, then the batches shuffled
BUCKET_POOL = 32
PROTOCOL = {"split": "leave-one-out by timestamp (ratings >= 3, 10-core users and items)",
            "protocol": "full ranking over all items, history not masked (RecBole sequential)"}
IGNORE = -100


def sequential_dataset(ds: Dataset) -> Dataset:
    """The benchmark's filter: ratings >= 3, then users and items with >= 10 of them."""
    return filter_interactions(ds, min_rating=MIN_RATING, min_user_count=MIN_COUNT,
                               min_item_count=MIN_COUNT)


def user_sequences(ds: Dataset) -> list[np.ndarray]:
    """Per internal user, internal items in time order (ties: file order, as leave_one_out)."""
    order = np.lexsort((np.arange(ds.n_interactions), ds.timestamps, ds.users))
    bounds = np.searchsorted(ds.users[order], np.arange(ds.n_users + 1))
    items = ds.items[order]
    return [items[bounds[u]:bounds[u + 1]] for u in range(ds.n_users)]


def history_tokens(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """Internal item lists -> int64 [len, max_len] tokens (item + 1), right-aligned, 0-padded;
    longer histories keep their last max_len items."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, items in enumerate(histories):
        tail = np.asarray(items[-max_len:], dtype=np.int64) if max_len else items[:0]
        if len(tail):
            out[row, max_len - len(tail):] = tail + 1
    return out


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (inputs, targets), both int64 [W, max_len], right-aligned.

    For a training sequence t, position j reads tokens of t[:j] and predicts t[j]; the first
    item is predicted from the empty history (input token 0). Targets are internal items,
    IGNORE where there is nothing to predict.
    """
    inputs, targets = [], []
    for t in sequences:
        if len(t) == 0:
            continue
        shifted = np.r_[0, t[:-1] + 1]
        for end in range(len(t), 0, -max_len):
            start = max(0, end - max_len)
            row_in = np.zeros(max_len, dtype=np.int64)
            row_out = np.full(max_len, IGNORE, dtype=np.int64)
            row_in[max_len - (end - start):] = shifted[start:end]
            row_out[max_len - (end - start):] = t[start:end]
            inputs.append(row_in)
            targets.append(row_out)
    return np.stack(inputs), np.stack(targets)


@dataclass(frozen=True)
class EvalSet:
    """One evaluation round: history tokens, the held-out item, the history to optionally mask."""
    tokens: np.ndarray            # int64 [U, max_len]
    targets: np.ndarray           # int64 [U]
    history: list[np.ndarray]     # [U] internal items before the target

    def evaluate(self, score_rows, mask_history: bool) -> RankingMetrics:
        rows = np.arange(len(self.targets))
        exclude = self.history if mask_history else [np.zeros(0, np.int64)] * len(rows)
        return evaluate_full_ranking(score_rows, rows, self.targets, exclude)


def evaluation_sets(sequences: list[np.ndarray], max_len: int) -> tuple[EvalSet, EvalSet]:
    """(valid, test) over users with >= 3 items: target s[-2] after s[:-2]; s[-1] after s[:-1].

    Users come shortest history first, so a scoring batch is cut to its longest real
    history (``model_scorer``); the metrics are means over users, so order does not matter.
    """
    users = sorted((s for s in sequences if len(s) >= 3), key=len)
    valid_hist, test_hist = [s[:-2] for s in users], [s[:-1] for s in users]
    valid = EvalSet(history_tokens(valid_hist, max_len), np.array([s[-2] for s in users]), valid_hist)
    test = EvalSet(history_tokens(test_hist, max_len), np.array([s[-1] for s in users]), test_hist)
    return valid, test


def model_scorer(model: SASRec, tokens: np.ndarray):
    """rows -> B x I scores from the last position, each batch cut to its longest real
    history (right-aligned: the padding columns cut away never influence a real one)."""
    real_width = (tokens != PAD).sum(1)

    @torch.no_grad()
    def score(rows: np.ndarray) -> np.ndarray:
        device = next(model.parameters()).device
        width = max(1, int(real_width[rows].max()))
        batch = torch.from_numpy(tokens[rows, -width:]).to(device)
        return model.next_item_scores(batch).cpu().numpy()
    return score


def _both(eval_set: EvalSet, scorer) -> dict:
    return {**eval_set.evaluate(scorer, mask_history=False).as_dict(),
            "history_masked": eval_set.evaluate(scorer, mask_history=True).as_dict()}


@register_task("sequential")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    return train(config, sequential_dataset(ds), progress)


def train(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    """ds: already filtered (``sequential_dataset``). Returns the early-stopped best model."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    keep_freed_memory()  # the attention maps are recycled instead of faulted in every step
    started = time.perf_counter()
    options = config.options
    assert isinstance(options, SASRecConfig)  # the sequential task trains SASRec
    hp: dict[str, Any] = {"lr": config.lr, "batch_size": config.batch_size, "weight_decay": config.weight_decay,
                          "dropout": options.dropout, "max_len": options.max_len,
                          "lr_schedule": config.lr_schedule}
    model_args = {"n_items": ds.n_items, "dim": config.dim, "max_len": options.max_len,
                  "layers": options.layers, "heads": options.heads, "dropout": options.dropout,
                  "output_embedding": options.output_embedding}
    device = torch.device(config.device)
    built = build_model(config.model, **model_args)
    assert isinstance(built, SASRec)
    model = built.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    sequences = user_sequences(ds)
    valid, test = evaluation_sets(sequences, options.max_len)
    inputs, targets = (torch.from_numpy(a).to(device) for a in training_windows(
        [s[:-2] if len(s) >= 3 else s for s in sequences], options.max_len))
    lengths = (targets != IGNORE).sum(1).cpu().numpy()

    def batch_loss(batch: np.ndarray) -> tuple[torch.Tensor, int]:
        """Loss only on real targets, the batch cut to its longest window."""
        width = max(1, int(lengths[batch].max()))
        index = torch.from_numpy(batch).to(inputs.device)
        tokens, wanted = inputs[index, -width:], targets[index, -width:]
        real = wanted != IGNORE
        hidden = model.encode(tokens)[real]
        return chunked_softmax_loss(hidden, model.item_vectors(), wanted[real]), int(real.sum())

    fitted = fit(model, optimizer, rng, epochs=config.epochs,
                 batches=lambda rng: length_buckets(lengths, hp["batch_size"], rng),
                 batch_loss=batch_loss,
                 validate=lambda _: valid.evaluate(model_scorer(model, valid.tokens), mask_history=False).ndcg_at_10,
                 patience=config.patience, schedule=config.lr_schedule, progress=progress,
                 desc=f"train {config.model}", metric_name="val_ndcg10")
    seconds = time.perf_counter() - started
    metrics = {"valid": _both(valid, model_scorer(model, valid.tokens)),
               "test": _both(test, model_scorer(model, test.tokens))}
    # counts over the rows before each user's test item (train + valid), as the model saw
    popularity = np.bincount(np.concatenate(test.history), minlength=ds.n_items).astype(np.float32)
    baselines = {"most_popular": {"test": _both(test, popularity_scorer(popularity))}}
    model = model.cpu()
    extra = {"n_users": ds.n_users, "n_items": ds.n_items, "n_interactions": ds.n_interactions,
             "filtered_fingerprint": ds.fingerprint(),
             "filter": {"min_rating": MIN_RATING, "min_user_count": MIN_COUNT,
                        "min_item_count": MIN_COUNT},
             "hparams": hp, "device": config.device, "train_windows": len(inputs),
             "train_minutes": round(seconds / 60, 2)}
    return TrainResult(model=model, model_args=model_args, metrics=metrics, baselines=baselines,
                       protocol=PROTOCOL, epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       seconds=seconds, extra=extra)


def length_buckets(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices in batches of similar length: shuffle, sort by length within pools of
    BUCKET_POOL batches, cut into batches, shuffle the batches. Every row exactly once."""
    order = rng.permutation(len(lengths))
    pool = batch_size * BUCKET_POOL
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def chunked_softmax_loss(hidden: torch.Tensor, items: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Mean full-softmax cross-entropy of hidden (N x D) against items (I x D), SOFTMAX_CHUNK rows at a time."""
    total = hidden.new_zeros(())
    for h, w in zip(hidden.split(SOFTMAX_CHUNK), wanted.split(SOFTMAX_CHUNK)):
        total = total + F.cross_entropy(h @ items.T, w, reduction="sum")
    return total / max(1, len(wanted))
