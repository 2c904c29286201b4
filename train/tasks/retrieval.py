"""What the two retrieval protocols share: the training pairs, the full-softmax objective over
the catalogue (with distillation for fine-tunes), and a torch model's score function.

``retrieval_loo`` and ``retrieval_random`` subclass ``RetrievalProtocol`` with their split and
their metric; this module registers no task itself.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from recdeploy.train.data import Dataset, Split
from recdeploy.train.tasks import TaskProtocol


def model_scorer(model):
    """user indices (np, B) -> scores over the catalogue (np, B x I) from model.score_all
    (any model with one: the towers, NeuMF, the biased MF)."""
    @torch.no_grad()
    def score(users: np.ndarray) -> np.ndarray:
        return model.score_all(torch.from_numpy(users)).numpy()
    return score


def softmax_loss(scores: torch.Tensor, items: torch.Tensor, teacher_log_p: torch.Tensor | None = None,
                 distill: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the softmax over the catalogue (scores B x I, items B). With distill
    > 0: (1 - distill) x that + distill x KL(teacher's softmax || the model's); the teacher's
    scores over the whole catalogue say more than one training item does."""
    if not distill:
        return F.cross_entropy(scores, items)
    if teacher_log_p is None:
        raise ValueError("distill > 0 needs the teacher's log-probabilities")
    log_p = torch.log_softmax(scores, 1)
    labels = (1 - distill) * F.nll_loss(log_p, items) if distill < 1 else 0.0
    return labels + distill * F.kl_div(log_p, teacher_log_p, log_target=True, reduction="batchmean")


class RetrievalProtocol(TaskProtocol):
    """Training pairs (users, items) of ``ds`` at ``split.train``; the objective is the full
    softmax over the catalogue (the towers' own). evaluate(score, part): score(user indices
    B) -> B x I scores; returns the subclass's metrics (ndcg_at_10, hr_at_10, n_users)."""
    primary_metric = "ndcg@10"
    distills = True

    def __init__(self, ds: Dataset, split: Split):
        self.ds, self.split = ds, split
        self.train_users = torch.from_numpy(ds.users[split.train])
        self.train_items = torch.from_numpy(ds.items[split.train])

    @property
    def n_train(self) -> int:
        return len(self.train_users)

    def batch_loss(self, model, rows: torch.Tensor, teacher=None, distill: float = 0.0) -> torch.Tensor:
        """rows: positions in the training pairs."""
        users = self.train_users[rows]
        teacher_log_p = None
        if distill:
            with torch.no_grad():
                teacher_log_p = torch.log_softmax(teacher.score_all(users), 1)
        return softmax_loss(model.score_all(users), self.train_items[rows], teacher_log_p, distill)

    def validation_metric(self, model) -> float:
        return self.evaluate(model_scorer(model), "valid").ndcg_at_10
