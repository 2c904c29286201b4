"""The one served-vs-reference comparison: are two ranked answers the same?

    worst = compare_answers(served, reference, label="recommend")     # AnswerMismatch if not

Used wherever an answer is held to its reference: export's parity checks (a fused graph
against the three-step numpy path), serve's start-up canary and the demo (the served answer
against the in-process pipeline), and the integration tests. An answer is a dict of output
arrays [B, K]: ids (ITEM_IDS) compared exactly, scores (SCORES) within a tolerance, and the
padding (-inf where fewer than K items remain) in the same places.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SCORE_TOLERANCE = 1e-4
EMPTY_HINT = "empty tensors usually mean numpy >= 2 in the python stub's environment"


class AnswerMismatch(ValueError):
    """Two answers differ; the message names the row and shows both."""


def unique_in_row(scores: np.ndarray) -> np.ndarray:
    """True where a score occurs once in its row (its position cannot depend on tie order)."""
    unique = np.ones(scores.shape, dtype=bool)
    for row in range(len(scores)):
        values, counts = np.unique(scores[row], return_counts=True)
        unique[row] = np.isin(scores[row], values[counts == 1])
    return unique


def compare_answers(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], *,
                    label: str, rows: Sequence | None = None, ids: str = "ITEM_IDS",
                    scores: str = "SCORES", tolerance: float = SCORE_TOLERANCE,
                    exact_ties: bool = True) -> float:
    """Max |score difference| where both are finite; AnswerMismatch naming the first bad row.

    exact_ties=False: the runtime promises no order among equal scores (torch.topk), so ids
    are compared only where their score is unique in its row; scores are compared everywhere.
    rows: what each row is (user ids, say), for the message; default the row number.
    """
    got_ids, got_scores = np.asarray(got.get(ids)), np.asarray(got.get(scores))
    want_ids, want_scores = np.asarray(want[ids]), np.asarray(want[scores])
    if got_ids.shape != want_ids.shape or got_scores.shape != want_scores.shape:
        raise AnswerMismatch(f"{label}: answered shapes {list(got_ids.shape)} / {list(got_scores.shape)}, "
                             f"reference {list(want_ids.shape)} / {list(want_scores.shape)}"
                             f"{' (' + EMPTY_HINT + ')' if got_ids.size == 0 else ''}")
    labels = list(rows) if rows is not None else list(range(len(want_ids)))
    checked = np.ones(want_ids.shape, dtype=bool) if exact_ties else unique_in_row(want_scores)
    worst = 0.0
    for row in range(len(want_ids)):
        finite = np.isfinite(want_scores[row])
        same_padding = np.array_equal(finite, np.isfinite(got_scores[row]))
        diff = (float(np.max(np.abs(got_scores[row][finite] - want_scores[row][finite]), initial=0.0))
                if same_padding else float("inf"))
        same_ids = np.array_equal(got_ids[row][checked[row]], want_ids[row][checked[row]])
        if not same_ids or diff > tolerance:
            raise AnswerMismatch(
                f"{label} differs from the reference for {_name(labels[row])}: got "
                f"{got_ids[row].tolist()} (scores {np.round(got_scores[row], 5).tolist()}), expected "
                f"{want_ids[row].tolist()} (scores {np.round(want_scores[row], 5).tolist()})")
        worst = max(worst, diff)
    return worst


def _name(label) -> str:
    return f"row {label}" if isinstance(label, (int, np.integer)) and not isinstance(label, bool) \
        else str(label)


def list_agreement(got_ids: np.ndarray, want_ids: np.ndarray) -> dict[str, float]:
    """How much a ranked list agrees with a reference list of the same rows, at its length K:
    overlap@K (share of the reference's items present) and NDCG@K of the answer taking the
    reference's items as the relevant ones (1.0: the same items in the same order)."""
    got_ids, want_ids = np.asarray(got_ids), np.asarray(want_ids)
    k = want_ids.shape[1]
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    overlap, ndcg = [], []
    for mine, theirs in zip(got_ids.tolist(), want_ids.tolist()):
        relevant = {item for item in theirs if item >= 0}
        if not relevant:
            continue
        hits = np.array([item in relevant for item in mine[:k]], dtype=float)
        overlap.append(hits.sum() / len(relevant))
        ndcg.append(float((hits * discount[:len(hits)]).sum() / discount[:len(relevant)].sum()))
    return {f"overlap@{k}": float(np.mean(overlap)) if overlap else 1.0,
            f"ndcg@{k}_vs_reference": float(np.mean(ndcg)) if ndcg else 1.0}
