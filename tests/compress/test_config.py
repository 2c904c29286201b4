"""Compression configs: JSON round-trips, presets, variant chains, and the errors users can cause."""
import pytest

from recdeploy.compress.config import (
    PRESETS,
    CompressionConfigError,
    DynamicInt8Config,
    PruneConfig,
    RowwiseConfig,
    StaticInt8Config,
    UnknownMethodError,
    config_from_dict,
    config_from_json,
    parse_methods,
    parse_variant,
    preset,
)
from recdeploy.compress.report import parse_budget


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    config = preset(name)
    assert config_from_json(config.to_json()) == config
    assert type(config_from_json(config.to_json())) is type(config)


def test_presets_carry_the_documented_settings():
    assert preset("prune-50") == PruneConfig(ratio=0.5)
    assert preset("rowwise-int4") == RowwiseConfig(bits=4)
    assert preset("cpu-int8") == DynamicInt8Config()
    assert preset("prune-62") == PruneConfig(ratio=0.62)     # any prune-NN, not only the listed ones
    with pytest.raises(CompressionConfigError, match=r"pruning ratio must be in \(0, 1\)"):
        preset("prune-100")
    static = preset("int8-static")
    assert (static.quant_format, static.activation_type) == ("qdq", "int8")   # what TensorRT takes


@pytest.mark.parametrize("ratio", [1.0, 1.5, 0.0, -0.1])
def test_pruning_ratio_outside_open_unit_interval_is_refused(ratio):
    with pytest.raises(CompressionConfigError, match=r"pruning ratio must be in \(0, 1\)"):
        PruneConfig(ratio=ratio)


def test_bad_field_values_name_the_valid_ones():
    with pytest.raises(CompressionConfigError, match="importance must be one of magnitude, taylor"):
        PruneConfig(importance="random")
    with pytest.raises(CompressionConfigError, match="bits must be one of 8, 4"):
        RowwiseConfig(bits=2)
    with pytest.raises(CompressionConfigError, match="calibration_size must be >= 1"):
        StaticInt8Config(calibration_size=0)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UnknownMethodError, match=r"unknown compression method 'int3'; valid: .*prune-50"):
        preset("int3")
    with pytest.raises(UnknownMethodError, match="unknown compression method 'magic' in config"):
        config_from_dict({"method": "magic"})
    with pytest.raises(CompressionConfigError, match=r"unknown keys \['speed'\] for 'prune'"):
        config_from_dict({"method": "prune", "speed": 2})


def test_variant_chains_parse_in_order_and_get_triton_safe_slugs():
    variants = parse_methods("prune-50+rowwise-int8, int8-dynamic")
    assert [v.name for v in variants] == ["prune-50+rowwise-int8", "int8-dynamic"]
    assert variants[0].configs == (PruneConfig(ratio=0.5), RowwiseConfig(bits=8))
    assert [v.slug for v in variants] == ["prune_50_rowwise_int8", "int8_dynamic"]


@pytest.mark.parametrize("spec, message", [
    ("int8-dynamic+prune-50", "must come before"),
    ("int8-dynamic+fp16", "more than one ONNX-side method"),
    ("rowwise-int8+prune-50", "rowwise must be the last model-side method"),
    ("rowwise-int8+int8-dynamic", "already quantized"),
    ("prune-50+", "empty method"),
])
def test_impossible_chains_are_refused(spec, message):
    with pytest.raises(CompressionConfigError, match=message):
        parse_variant(spec)


def test_empty_method_list_is_refused():
    with pytest.raises(CompressionConfigError, match="no compression method"):
        parse_methods(" , ")


def test_quality_budget_parsing():
    assert parse_budget("1%") == pytest.approx(0.01)
    assert parse_budget("0.005") == pytest.approx(0.005)
    with pytest.raises(CompressionConfigError, match="quality budget must be in"):
        parse_budget("150%")
    with pytest.raises(CompressionConfigError, match="must look like '1%'"):
        parse_budget("one percent")


def test_prune_kd_preset_distills_and_bad_weights_are_refused():
    from recdeploy.compress.config import preset
    assert preset("prune-62-kd") == PruneConfig(ratio=0.62, distill=1.0, finetune_epochs=12)
    assert preset("prune-62").distill == 0.0
    with pytest.raises(CompressionConfigError, match="distill is a loss weight"):
        PruneConfig(distill=1.5)
