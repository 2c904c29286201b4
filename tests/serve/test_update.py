"""The warm start learns the new clicks and the gate metric is the served ranking (no server)."""
import numpy as np
import pytest
import torch

from recdeploy.serve.update import UpdateConfig, ndcg_next, warm_start
from recdeploy.serve.update_cli import current_run, parse_time
from recdeploy.train.models import build_model


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only fight over the shared cores
    yield
    torch.set_num_threads(threads)


def test_warm_start_learns_the_new_transitions_and_leaves_the_model_alone(one_thread):
    model = build_model("sasrec", n_items=50, dim=16, max_len=8, layers=1, heads=1, dropout=0.0).eval()
    rng = np.random.default_rng(0)
    # every new session ends 7 -> 13: the newest behaviour the update should pick up
    sequences = [np.r_[rng.integers(0, 50, 5), 7, 13] for _ in range(64)]
    histories, targets = [s[:-1] for s in sequences], np.array([s[-1] for s in sequences])
    seen = [np.zeros(0, np.int64)] * len(sequences)
    before = ndcg_next(model, histories, targets, seen, 8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = warm_start(model, sequences, UpdateConfig(epochs=8, lr=3e-2, batch_size=64))
    after = ndcg_next(tuned, histories, targets, seen, 8)
    assert after > before + 0.3 and after > 0.9
    assert all((model.state_dict()[k] == v).all() for k, v in weights.items())   # a copy was tuned
    masked = ndcg_next(tuned, histories, targets, [np.array([13, 7])] * len(sequences), 8)
    assert masked == pytest.approx(after)                    # the target itself is never masked


def test_since_takes_epoch_seconds_or_iso_times(tmp_path):
    assert parse_time("86400") == 86400.0 and parse_time("1970-01-02T00:00") == 86400.0
    with pytest.raises(ValueError, match="seconds since 1970 or an ISO time"):
        parse_time("yesterday")
    assert current_run(tmp_path) == tmp_path
    for n in ("1", "2", "10"):
        (tmp_path / "updates" / n / "checkpoint").mkdir(parents=True)
    assert current_run(tmp_path) == tmp_path / "updates" / "10"
