"""The one served-vs-reference comparison (canary, demo, export parity) and list agreement."""
import numpy as np
import pytest

from recdeploy.export.compare import AnswerMismatch, compare_answers, list_agreement, unique_in_row
from recdeploy.export.scenarios.base import canary_users

IDS = np.array([[1, 2, 3], [4, 5, 6]])
SCORES = np.array([[0.9, 0.5, 0.1], [3.0, 2.0, -np.inf]], np.float32)
USERS = ["user 10", "user 11"]


def answer(ids, scores):
    return {"ITEM_IDS": np.asarray(ids), "SCORES": np.asarray(scores)}


def test_canary_users_are_real_plus_one_unknown():
    users = canary_users(np.array([3, 5, 9, 12, 40]), n=3)
    assert users.tolist() == [3, 9, 40, 41]


def test_compare_accepts_equal_and_names_the_first_differing_row():
    assert compare_answers(answer(IDS, SCORES + 1e-6), answer(IDS, SCORES), label="served", rows=USERS) < 1e-5
    with pytest.raises(AnswerMismatch, match=r"for user 11: got \[4, 6, 5\].*expected \[4, 5, 6\]"):
        compare_answers(answer([[1, 2, 3], [4, 6, 5]], SCORES), answer(IDS, SCORES), label="served", rows=USERS)
    with pytest.raises(AnswerMismatch, match=r"for user 10: .*scores"):
        compare_answers(answer(IDS, SCORES + np.float32(0.01)), answer(IDS, SCORES), label="served", rows=USERS)
    with pytest.raises(AnswerMismatch, match=r"numpy >= 2"):
        compare_answers(answer(np.zeros((0,)), np.zeros((0,))), answer(IDS, SCORES), label="served", rows=USERS)
    with pytest.raises(AnswerMismatch, match=r"for row 1"):   # -inf padding in another place
        compare_answers(answer(IDS, [[0.9, 0.5, 0.1], [3.0, -np.inf, -np.inf]]), answer(IDS, SCORES), label="x")


def test_tie_tolerant_comparison_checks_ids_only_where_scores_are_unique():
    tied = np.array([[0.9, 0.5, 0.5]], np.float32)
    want = answer([[1, 2, 3]], tied)
    assert unique_in_row(tied).tolist() == [[True, False, False]]
    assert compare_answers(answer([[1, 3, 2]], tied), want, label="torch", exact_ties=False) == 0.0
    with pytest.raises(AnswerMismatch):
        compare_answers(answer([[1, 3, 2]], tied), want, label="onnx")
    with pytest.raises(AnswerMismatch):
        compare_answers(answer([[2, 1, 3]], tied), want, label="torch", exact_ties=False)


def test_list_agreement_is_overlap_and_rank_aware_ndcg():
    same = list_agreement(np.array([[1, 2, 3]]), np.array([[1, 2, 3]]))
    assert same == {"overlap@3": 1.0, "ndcg@3_vs_reference": 1.0}
    swapped = list_agreement(np.array([[2, 1, 9]]), np.array([[1, 2, 3]]))
    assert swapped["overlap@3"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert swapped["ndcg@3_vs_reference"] == pytest.approx((1 + 1 / np.log2(3)) / ideal)
    # -1 pads a reference list that ran out of items: only its real items count
    assert list_agreement(np.array([[5, 7, -1]]), np.array([[5, 7, -1]]))["overlap@3"] == 1.0
