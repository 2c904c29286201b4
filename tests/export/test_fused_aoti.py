"""The torch.export + AOTInductor package of the fused retrieval model: exported with K's range
checked, compiled once per session (the exported ML-100k repository), equal to the reference."""
import json

import numpy as np
import pytest
import torch
from tritonclient.grpc import model_config_pb2 as pb

from recdeploy.export import fused_aoti
from recdeploy.export.fused import FusedRetrieval
from recdeploy.export.fused_aoti import AotiUnavailable, export_program, write_fused_aoti_variant
from recdeploy.export.scenarios import scenario_of
from recdeploy.export.scenarios.base import entries_of, user_requests
from recdeploy.export.triton_config import parse_config_text


@pytest.fixture(scope="module")
def tiny_fused():
    """4 users (ids 5, 9, 12, 20), 6 items; user 9 has seen items 0 and 3."""
    rng = np.random.default_rng(0)
    return FusedRetrieval(rng.normal(size=(4, 4)), rng.normal(size=(6, 4)), rng.normal(size=6),
                          np.array([4, 9, 9, 1, 0, 7], np.float32), np.array([5, 9, 12, 20]),
                          np.array([0, 1, 3, 3, 4]), np.array([2, 0, 3, 5]),
                          np.array([100, 101, 102, 103, 104, 105]))


def test_the_exported_program_has_a_dynamic_batch_and_refuses_k_outside_the_catalogue(tiny_fused):
    program = export_program(tiny_fused, tiny_fused.n_items, torch.tensor([5, 9]))
    run = program.module()
    for users, k in (([[5]], 3), ([[5], [9], [12], [7], [20]], 6)):
        users_t = torch.tensor(users)
        k_t = torch.full((len(users), 1), k, dtype=torch.int32)
        got, want = run(users_t, k_t), tiny_fused.graph_forward(users_t, k_t)
        assert got[0].shape == (len(users), k)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for bad in (0, 7):
        with pytest.raises(RuntimeError, match="Runtime assertion failed"):
            run(torch.tensor([[5]]), torch.tensor([[bad]], dtype=torch.int32))


def test_without_a_compiler_or_switched_off_the_variant_is_left_out_with_the_reason(monkeypatch, tiny_fused,
                                                                                   tmp_path):
    from torch._inductor import cpp_builder, exc

    def no_compiler():
        raise exc.InvalidCxxCompiler()

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(AotiUnavailable, match="no C\\+\\+ compiler for AOTInductor"):
        write_fused_aoti_variant(tmp_path, tiny_fused, None, np.array([5]), np.zeros((4, 6)))
    monkeypatch.setenv(fused_aoti.ENV_SWITCH, "0")
    with pytest.raises(AotiUnavailable, match="RECDEPLOY_AOTI=0"):
        write_fused_aoti_variant(tmp_path, tiny_fused, None, np.array([5]), np.zeros((4, 6)))
    assert not list(tmp_path.iterdir())


def test_the_export_writes_the_package_with_its_config_and_entries(repository):
    folder = repository / "fused_retrieval_aoti"
    assert (folder / "1" / "model.pt2").stat().st_size > 10_000
    config = parse_config_text((folder / "config.pbtxt").read_text())
    assert config.platform == "pytorch_libtorch" and config.default_model_filename == "model.pt2"
    assert config.parameters["input_range"].string_value == "K=1..1682"
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    entries = entries_of(repository)
    for name in ("recommend_fused_aoti", "fused_retrieval_aoti"):
        assert entries[name].reference == {"kind": "aoti", "model": "fused_retrieval_aoti"}
        assert not entries[name].exact_ties
    assert json.loads((repository / "recdeploy.json").read_text())["notes"] == []


def test_the_package_answers_like_the_onnx_graph_and_the_torchscript_module(repository, ml100k):
    users = np.r_[ml100k.user_ids[::97], [-1, 10 ** 12]]
    requests = user_requests(users, 20)

    def answer(entry):
        scenario, found = scenario_of(repository, entry)
        return scenario.reference(repository, found)(requests)

    aoti, onnx, scripted = (answer(name) for name in ("fused_retrieval_aoti", "recommend_fused",
                                                      "fused_retrieval_libtorch"))
    known = slice(0, len(users) - 2)  # learned scores have no ties: identical lists
    assert np.array_equal(aoti["ITEM_IDS"][known], onnx["ITEM_IDS"][known])
    assert np.array_equal(aoti["ITEM_IDS"][known], scripted["ITEM_IDS"][known])
    np.testing.assert_allclose(aoti["SCORES"], onnx["SCORES"], rtol=1e-5, atol=1e-5)
    # the unknown users rank by popularity counts, full of ties: the same scores
    assert np.array_equal(np.sort(aoti["SCORES"][-2:]), np.sort(onnx["SCORES"][-2:]))
