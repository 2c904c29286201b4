"""The two-tower family compresses a grocery (next_basket) run under its own protocol."""
import pytest
import torch

from recdeploy.compress import PruneConfig, compress
from recdeploy.compress.families import family_named
from recdeploy.train.models import build_model
from recdeploy.train.tasks import protocol
from recdeploy.train.tasks.retrieval import model_scorer


@pytest.fixture(scope="module")
def tower(instacart):
    torch.manual_seed(0)
    return build_model("two_tower", n_users=instacart.n_users, n_items=instacart.n_items, dim=8).eval()


def test_quality_and_pruning_follow_the_next_basket_protocol(tower, instacart):
    family = family_named("two_tower")
    data = family.task_data(tower, instacart, n_requests=64, task="next_basket")
    measured = data.evaluate(lambda inputs: model_scorer(tower)(inputs["USER_INDEX"][:, 0]))
    expected = protocol("next_basket", instacart).evaluate(model_scorer(tower), "test")
    assert measured["ndcg@10"] == pytest.approx(expected.ndcg_at_10) and measured["users"] == 593
    pruned = compress(tower, PruneConfig(ratio=0.5, finetune_epochs=0), data=data)
    assert pruned.dim == 4 and pruned.score_all(torch.arange(3)).shape == (3, instacart.n_items)
