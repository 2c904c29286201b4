import pytest
from tritonclient.grpc import model_config_pb2 as pb

from recdeploy.export.retrieval_specs import ensemble_spec, lookup_spec, retrieval_pipeline, scorer_spec, topk_spec
from recdeploy.export.triton_config import (
    ConfigSpecError,
    EnsembleSpec,
    EnsembleStep,
    EnsembleWiringError,
    ModelSpec,
    TensorSpec,
    build_ensemble_config,
    build_model_config,
    check_ensemble,
    config_text,
    parse_config_text,
)


def test_scorer_config_round_trips_through_text():
    config = build_model_config(scorer_spec(1682))
    parsed = parse_config_text(config_text(config))
    assert parsed == config
    assert parsed.platform == "onnxruntime_onnx" and parsed.max_batch_size == 256
    assert parsed.HasField("dynamic_batching")
    assert list(parsed.output[0].dims) == [1682] and parsed.output[0].data_type == pb.TYPE_FP32
    assert parsed.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"


def test_ensemble_config_wires_three_steps():
    config = build_ensemble_config(ensemble_spec("int8"))
    assert config.name == "recommend_int8" and config.platform == "ensemble"
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["feature_lookup", "scorer_int8", "topk"]
    assert dict(steps[2].output_map) == {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}


def test_pipeline_passes_its_own_check():
    pipeline = retrieval_pipeline(100)
    assert [m.name for m in pipeline.models] == ["feature_lookup", "scorer", "topk"]


def _models():
    return {m.name: m for m in (lookup_spec(), scorer_spec(10), topk_spec(10))}


def test_check_rejects_input_read_before_written():
    spec = ensemble_spec()
    swapped = EnsembleSpec(spec.name, spec.inputs, spec.outputs, (spec.steps[1], spec.steps[0], spec.steps[2]))
    with pytest.raises(EnsembleWiringError, match="reads 'user_index', which is neither an ensemble input"):
        check_ensemble(swapped, _models())


def test_check_rejects_unproduced_output_and_unknown_model():
    spec = ensemble_spec()
    with pytest.raises(EnsembleWiringError, match=r"outputs \['SCORES'\] are produced by no step"):
        check_ensemble(EnsembleSpec(spec.name, spec.inputs, spec.outputs, spec.steps[:2] + (
            EnsembleStep("topk", spec.steps[2].input_map, {"ITEM_IDS": "ITEM_IDS"}),)), _models())
    with pytest.raises(EnsembleWiringError, match="no such model"):
        check_ensemble(ensemble_spec("int8"), _models())


def test_check_rejects_wrong_tensor_names_and_batch():
    spec = ensemble_spec()
    bad_step = EnsembleStep("scorer", {"USER_IDX": "user_index"}, {"SCORES": "all_scores"})
    with pytest.raises(EnsembleWiringError, match=r"maps inputs \['USER_IDX'\] but the model takes \['USER_INDEX'\]"):
        check_ensemble(EnsembleSpec(spec.name, spec.inputs, spec.outputs,
                                    (spec.steps[0], bad_step, spec.steps[2])), _models())
    big = EnsembleSpec(spec.name, spec.inputs, spec.outputs, spec.steps, max_batch_size=1024)
    with pytest.raises(EnsembleWiringError, match="max_batch_size 1024 exceeds the model's 256"):
        check_ensemble(big, _models())


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "", ".hidden", "x..y"])
def test_model_names_with_path_parts_are_refused(name):
    with pytest.raises(ConfigSpecError, match="invalid model name"):
        ModelSpec(name=name, backend="python", inputs=(), outputs=())


def test_spec_errors():
    with pytest.raises(ConfigSpecError, match="unknown dtype 'FLOAT'"):
        TensorSpec("X", "FLOAT", (1,))
    with pytest.raises(ConfigSpecError, match="set exactly one of backend / platform"):
        ModelSpec(name="m", inputs=(), outputs=())


def test_default_model_filename_is_written_and_must_be_a_plain_name():
    spec = ModelSpec(name="m", platform="pytorch_libtorch", inputs=(), outputs=(),
                     default_model_filename="model.pt2")
    assert parse_config_text(config_text(build_model_config(spec))).default_model_filename == "model.pt2"
    assert not build_model_config(ModelSpec(name="m", platform="onnxruntime_onnx", inputs=(),
                                            outputs=())).default_model_filename
    for bad in ("../model.pt2", "a/model.pt2"):
        with pytest.raises(ConfigSpecError, match="must be a plain file name"):
            ModelSpec(name="m", platform="pytorch_libtorch", inputs=(), outputs=(), default_model_filename=bad)
