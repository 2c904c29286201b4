"""SASRec's parts, the sequential protocol's data handling, and a short real training run."""
import numpy as np
import pytest
import torch

from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.data import Dataset, filter_interactions
from recdeploy.train.loop import lr_schedule
from recdeploy.train.models import build_model
from recdeploy.train.models.sasrec import attention_mask, byte_dropout
from recdeploy.train.tasks import sequential as S


def tiny_model(n_items=30, max_len=8, seed=0):
    torch.manual_seed(seed)
    return build_model("sasrec", n_items=n_items, dim=16, max_len=max_len, layers=2, heads=2,
                       dropout=0.0).eval()


class TestAttentionMask:
    def test_causal_real_keys_and_self(self):
        mask = attention_mask(torch.tensor([[0, 0, 3, 5]]))[0]
        assert mask.int().tolist() == [[1, 0, 0, 0],
                                       [0, 1, 0, 0],
                                       [0, 0, 1, 0],
                                       [0, 0, 1, 1]]

    def test_empty_history_has_no_all_masked_row(self):
        assert attention_mask(torch.zeros(2, 5, dtype=torch.long)).any(dim=-1).all()


class TestByteDropout:
    def test_drops_p_of_the_elements_and_keeps_the_mean(self):
        torch.manual_seed(0)
        x = torch.ones(400_000)
        out = byte_dropout(x, 0.2, training=True)
        dropped = float((out == 0).float().mean())
        assert abs(dropped - round(0.2 * 256) / 256) < 0.003
        assert abs(float(out.mean()) - 1.0) < 0.01
        assert torch.unique(out).tolist() == [0.0, pytest.approx(256 / (256 - 51))]

    def test_every_byte_of_a_word_is_used_uniformly(self):
        torch.manual_seed(1)
        dropped = (byte_dropout(torch.ones(100_000, 4), 0.5, training=True) == 0).float().mean(0)
        assert torch.all((dropped - 0.5).abs() < 0.01), dropped   # random_() alone: last byte 0 %

    def test_gradient_flows_through_kept_elements_only(self):
        torch.manual_seed(2)
        x = torch.ones(1000, requires_grad=True)
        out = byte_dropout(x, 0.3, training=True)
        out.sum().backward()
        torch.testing.assert_close(x.grad, (out != 0).float() * (256 / (256 - 77)))

    def test_eval_and_zero_p_are_the_identity_and_seeds_repeat(self):
        x = torch.randn(3, 5)
        assert torch.equal(byte_dropout(x, 0.5, training=False), x)
        assert torch.equal(byte_dropout(x, 0.0, training=True), x)
        torch.manual_seed(3)
        first = byte_dropout(x, 0.5, True)
        torch.manual_seed(3)
        assert torch.equal(byte_dropout(x, 0.5, True), first)


class TestSASRec:
    def test_output_shape_and_empty_history_is_finite(self):
        model = tiny_model()
        with torch.no_grad():
            scores = model(torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 2, 3]]))
        assert scores.shape == (2, 30)
        assert torch.isfinite(scores).all()

    def test_output_ignores_whatever_sits_in_padded_positions(self):
        model = tiny_model()
        history = torch.tensor([[0, 0, 0, 0, 0, 4, 9, 2], [0, 0, 0, 0, 0, 0, 0, 7]])
        with torch.no_grad():
            before = model(history)
            # scramble the padding row and the position rows that only padded columns use
            model.embedding.item.weight[0].normal_()
            model.embedding.position.weight[:5].normal_()
            after = model(history)
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)

    def test_long_history_keeps_the_last_max_len_and_width_does_not_matter(self):
        model = tiny_model()
        long = torch.arange(1, 21).reshape(1, -1)           # 20 items, max_len 8
        with torch.no_grad():
            full = model(long)
            last = model(long[:, -8:])
            padded = model(torch.nn.functional.pad(long[:, -3:], (9, 0)))  # width 12
            short = model(long[:, -3:])
        torch.testing.assert_close(full, last, rtol=0, atol=0)
        torch.testing.assert_close(padded, short, rtol=0, atol=1e-6)

    def test_heads_must_divide_dim(self):
        with pytest.raises(ValueError, match="dim 10 must be divisible by heads 3"):
            build_model("sasrec", n_items=5, dim=10, heads=3)

    def test_separate_output_embedding_scores_with_its_own_table(self):
        torch.manual_seed(0)
        model = build_model("sasrec", n_items=30, dim=16, max_len=8, layers=1, dropout=0.0,
                            output_embedding="separate").eval()
        assert model.item_vectors().shape == (30, 16)
        assert model.item_vectors() is model.output_items
        history = torch.tensor([[0, 0, 0, 0, 0, 4, 9, 2]])
        with torch.no_grad():
            before = model(history)
            torch.testing.assert_close(before, model.encode(history)[:, -1] @ model.output_items.T)
            model.output_items[5] += 1.0                    # only item 5's score may move
            after = model(history)
        moved = (after - before).abs()[0] > 0
        assert moved.tolist() == [i == 5 for i in range(30)]

    def test_shared_output_embedding_is_the_input_table_and_old_cards_rebuild_shared(self):
        model = build_model("sasrec", n_items=30, dim=16, max_len=8)   # a card without the key
        assert model.output_items is None
        assert model.item_vectors().data_ptr() == model.embedding.item.weight[1:].data_ptr()
        names = set(model.state_dict())
        assert not any(name.startswith("output_items") for name in names)

    def test_unknown_output_embedding_is_refused(self):
        with pytest.raises(ValueError, match="unknown output_embedding 'tied'; valid: shared, separate"):
            build_model("sasrec", n_items=5, dim=8, output_embedding="tied")
        with pytest.raises(ConfigError, match="unknown output_embedding 'tied'"):
            TrainConfig(model="sasrec", output_embedding="tied")


class TestProtocolData:
    def test_filter_is_iterated_k_core_after_the_rating_filter(self):
        # u0: items 0,1,2 (ratings 5); u1: items 0,1 (5) + 2 (1 star); u2: item 2 only
        users = np.array([0, 0, 0, 1, 1, 1, 2])
        items = np.array([0, 1, 2, 0, 1, 2, 2])
        ratings = np.array([5, 5, 5, 5, 5, 1, 5], dtype=np.float32)
        ds = Dataset("t", np.array([10, 20, 30]), np.array([100, 200, 300]), ("a", "b", "c"),
                     users, items, ratings, np.arange(7))
        out = filter_interactions(ds, min_rating=3, min_user_count=2, min_item_count=2)
        # rating drop leaves item 2 with u0,u2; u2 then has 1 -> dropped; item 2 has 1 -> dropped
        assert out.user_ids.tolist() == [10, 20] and out.item_ids.tolist() == [100, 200]
        assert sorted(zip(out.users.tolist(), out.items.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]

    def test_history_tokens_are_right_aligned_and_truncated(self):
        tokens = S.history_tokens([np.array([4, 5, 6]), np.array([], np.int64), np.arange(10)], 4)
        assert tokens.tolist() == [[0, 5, 6, 7], [0, 0, 0, 0], [7, 8, 9, 10]]

    def test_training_windows_predict_every_item_first_from_the_empty_history(self):
        inputs, targets = S.training_windows([np.array([3, 1, 4, 1, 5])], 3)
        assert inputs.tolist() == [[2, 5, 2], [0, 0, 4]]
        assert targets.tolist() == [[4, 1, 5], [-100, 3, 1]]

    def test_evaluation_sets_hold_out_last_two_by_time(self):
        valid, test = S.evaluation_sets([np.array([7, 8, 9, 10])], 3)
        assert valid.targets.tolist() == [9] and valid.tokens.tolist() == [[0, 8, 9]]
        assert test.targets.tolist() == [10] and test.tokens.tolist() == [[8, 9, 10]]

    def test_config_rejects_bad_sequence_fields(self):
        with pytest.raises(ConfigError, match="need max_len, layers, heads >= 1 and 0 <= dropout < 1"):
            TrainConfig(model="sasrec", dropout=1.5)

    def test_model_defaults_apply_unless_given(self):
        from recdeploy.train.models import MODELS
        own = MODELS["sasrec"].default_config
        assert own["lr"] != TrainConfig().lr
        assert TrainConfig.for_model("sasrec").lr == own["lr"]
        assert TrainConfig.for_model("sasrec", lr=0.02).lr == 0.02
        assert TrainConfig.for_model("two_tower").lr == TrainConfig().lr
        assert TrainConfig.for_model("sasrec", output_embedding="separate").output_embedding == "separate"
        assert TrainConfig.for_model("sasrec").output_embedding == "shared"

    def test_length_buckets_cover_every_row_once_in_similar_lengths(self):
        lengths = np.random.default_rng(0).integers(1, 200, 1000)
        batches = S.length_buckets(lengths, 16, np.random.default_rng(1))
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
        assert spread < 20          # unsorted batches of 16 would spread over ~180

    def test_cutting_padding_columns_changes_no_real_output(self):
        torch.manual_seed(0)
        model = build_model("sasrec", n_items=30, dim=8, max_len=12, layers=2, heads=2, dropout=0.0).eval()
        tokens = torch.tensor([[0] * 7 + [3, 4, 5, 6, 7], [0] * 9 + [2, 9, 1]])
        with torch.no_grad():
            full, cut = model.encode(tokens)[:, -5:], model.encode(tokens[:, -5:])
        assert torch.allclose(full[0], cut[0], atol=1e-5)
        assert torch.allclose(full[1, -3:], cut[1, -3:], atol=1e-5)

    def test_evaluation_scorer_cut_to_the_batch_equals_the_full_forward(self):
        torch.manual_seed(0)
        model = build_model("sasrec", n_items=30, dim=8, max_len=12, layers=2, heads=2, dropout=0.0).eval()
        valid, _ = S.evaluation_sets([np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8, 9]),
                                      np.arange(10, 29)], max_len=12)
        assert [len(h) for h in valid.history] == [1, 4, 17]   # shortest history first
        rows = np.arange(3)
        with torch.no_grad():
            full = model(torch.from_numpy(valid.tokens)).numpy()
        np.testing.assert_allclose(S.model_scorer(model, valid.tokens)(rows[:2]), full[:2], atol=1e-5)
        np.testing.assert_allclose(S.model_scorer(model, valid.tokens)(rows), full, atol=1e-5)

    def test_cosine_schedule_halves_midway_and_ends_at_zero(self):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
        schedule = lr_schedule(optimizer, "cosine", total_steps=10)
        seen = []
        for _ in range(12):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        assert seen[0] == pytest.approx(0.4) and seen[5] == pytest.approx(0.2) and seen[11] == pytest.approx(0.0)
        with pytest.raises(ConfigError, match="unknown lr_schedule 'step'"):
            TrainConfig(lr_schedule="step")

    def test_chunked_softmax_equals_one_shot(self):
        hidden, items = torch.randn(5000, 8), torch.randn(40, 8)
        wanted = torch.randint(0, 40, (5000,))
        one_shot = torch.nn.functional.cross_entropy(hidden @ items.T, wanted)
        assert torch.allclose(S.chunked_softmax_loss(hidden, items, wanted), one_shot, atol=1e-5)


def test_short_training_on_ml100k_beats_most_popular(ml100k):
    """A few seconds of training: a quality floor, not the reported numbers."""
    # one epoch at a constant rate: a cosine schedule over one epoch would anneal before it learns
    config = TrainConfig.for_model("sasrec", dataset="ml-100k", dim=16, max_len=20, layers=1, epochs=1,
                                   lr_schedule="constant")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is shared: one thread beats two fighting for cores
    try:
        result = S.train(config, S.sequential_dataset(ml100k), progress=False)
    finally:
        torch.set_num_threads(threads)
    ours, pop = result.metrics["test"], result.baselines["most_popular"]["test"]
    assert result.extra["n_items"] == 1016 and ours["users"] == 939
    assert ours["ndcg@10"] > pop["ndcg@10"]
    assert ours["history_masked"]["ndcg@10"] > pop["history_masked"]["ndcg@10"]
