"""The tasks' public protocol objects: the same split and numbers as the task, fine-tunes."""
import copy

import pytest
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import synthetic
from recdeploy.train.tasks import FineTuneError, UnknownPartError, UnknownTaskError, protocol, run_task
from recdeploy.train.tasks.ctr import CtrBatch
from recdeploy.train.tasks.retrieval import model_scorer


@pytest.fixture(scope="module")
def tiny():
    return synthetic(n_users=60, n_items=40, interactions_per_user=12, seed=3)


@pytest.fixture(scope="module")
def tiny_dcn(ml100k):
    from recdeploy.train.tasks import ctr
    config = TrainConfig(model="dcn_v2", dataset="ml-100k", dim=4, epochs=1, batch_size=4096, lr=0.01)
    torch.manual_seed(0)
    rows, _ = ctr.ctr_rows(ml100k)
    return ctr.train(config, ml100k, ctr.random_split(rows, 0), progress=False, cross_layers=1,
                     hidden=(8,))


def test_leave_one_out_protocol_gives_the_tasks_own_numbers(trained_run, ml100k):
    _, result = trained_run
    proto = protocol("retrieval_loo", ml100k)
    assert proto.evaluate(model_scorer(result.model), "test").as_dict() == result.metrics["test"]
    assert proto.evaluate(model_scorer(result.model), "valid").as_dict() == result.metrics["valid"]
    assert proto.n_train == ml100k.n_interactions - 2 * ml100k.n_users
    with pytest.raises(UnknownPartError, match="part must be one of valid, test, got 'train'"):
        proto.evaluate(model_scorer(result.model), "train")


def test_random_protocol_redraws_the_runs_split_from_its_seed(tiny):
    config = TrainConfig(model="two_tower", task="retrieval_random", dataset="synthetic", dim=8,
                         epochs=1, batch_size=256, seed=5)
    result = run_task(config, tiny, progress=False)
    score = model_scorer(result.model)
    assert protocol("retrieval_random", tiny, seed=5).evaluate(score).as_dict() == result.metrics["test"]
    assert protocol("retrieval_random", tiny, seed=6).evaluate(score).as_dict() != result.metrics["test"]


def test_ctr_protocol_gives_the_tasks_auc_and_recognises_its_tables(tiny_dcn, ml100k):
    proto = protocol("ctr", ml100k, seed=0)

    @torch.no_grad()
    def score(rows):
        return tiny_dcn.model(*(torch.from_numpy(a) for a in proto.features(rows))).numpy()

    metrics = proto.evaluate(score, "test")
    assert metrics["rows"] == tiny_dcn.metrics["test"]["rows"]
    assert round(metrics["auc"], 4) == tiny_dcn.metrics["test"]["auc"]
    assert proto.trained_on_this_split(tiny_dcn.model)
    assert not protocol("ctr", ml100k, seed=1).trained_on_this_split(tiny_dcn.model)
    rows = torch.arange(8)
    shown_unknown = proto.batch_loss(tiny_dcn.model, CtrBatch(rows, torch.ones(8, dtype=torch.bool)))
    assert shown_unknown.item() != proto.batch_loss(tiny_dcn.model, CtrBatch(rows)).item()


def test_a_fine_tune_never_ends_worse_on_validation_than_it_started(trained_run, ml100k):
    _, result = trained_run
    proto = protocol("retrieval_loo", ml100k)
    start = proto.validation_metric(result.model)
    ruined = proto.finetune(copy.deepcopy(result.model), epochs=1, lr=50.0, batch_size=4096)
    assert proto.validation_metric(ruined) == start
    assert all(torch.equal(a, b) for a, b in zip(ruined.state_dict().values(),
                                                 result.model.state_dict().values()))
    tuned = proto.finetune(copy.deepcopy(result.model), epochs=1, lr=0.005, batch_size=4096)
    assert proto.validation_metric(tuned) >= start


def test_fine_tune_refusals(trained_run, ml100k, tiny_dcn):
    _, result = trained_run
    with pytest.raises(FineTuneError, match="distill > 0 needs the teacher model"):
        protocol("retrieval_loo", ml100k).finetune(result.model, epochs=1, lr=0.01, distill=0.5)
    with pytest.raises(FineTuneError, match="the ctr fine-tune cannot distill; use distill=0"):
        protocol("ctr", ml100k).finetune(tiny_dcn.model, epochs=1, lr=0.01, teacher=tiny_dcn.model,
                                         distill=1.0)


def test_tasks_without_a_public_protocol_say_which_have_one(ml100k):
    with pytest.raises(UnknownTaskError, match="task 'sequential' has no public protocol; tasks with "
                                               "one: ctr, next_basket, retrieval_loo, retrieval_random"):
        protocol("sequential", ml100k)
