"""PerfConfig validation and JSON round trip."""
from pathlib import Path

import pytest

from recdeploy.perf.config import PerfConfig, PerfConfigError


def test_defaults_and_normalisation():
    config = PerfConfig("recommend", concurrency=[1, 2, 4], input_data="in.json")
    assert config.concurrency == (1, 2, 4)
    assert config.input_data == Path("in.json")
    assert config.url == "127.0.0.1:8001" and config.protocol == "grpc" and config.batch_size == 1
    assert config.concurrency_step() is None
    assert PerfConfig("m", concurrency=(2, 4, 6)).concurrency_step() == 2
    assert PerfConfig("m", concurrency=(3,)).concurrency_step() == 1
    assert config.at_concurrency(4).concurrency == (4,)


def test_timeout_derived_from_windows():
    config = PerfConfig("m", measurement_interval_ms=2000, max_trials=10)
    assert config.timeout_for(1) == 70.0  # 30 s start-up + 2 x 10 windows x 2 s
    assert config.timeout_for(3) == 210.0
    assert PerfConfig("m", timeout_s=5).timeout_for(3) == 5.0


def test_label():
    assert PerfConfig("recommend").label == "recommend"
    assert PerfConfig("recommend_int8", batch_size=32).label == "recommend_int8 (batch 32)"


def test_json_round_trip():
    config = PerfConfig("recommend_int8", url="localhost:8000", protocol="http", concurrency=(1, 8),
                        batch_size=16, input_data=Path("/tmp/x.json"), percentile=95,
                        metrics_url="localhost:8002/metrics", extra_args=("--verbose-csv",))
    assert PerfConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PerfConfigError, match=r"unknown PerfConfig field\(s\) \['colour'\]"):
        PerfConfig.from_dict({"model_name": "m", "colour": "red"})


@pytest.mark.parametrize("kwargs, message", [
    ({"model_name": ""}, r"model_name must be a Triton model name"),
    ({"model_name": "a b"}, r"model_name must be a Triton model name"),
    ({"url": "http://127.0.0.1:8001"}, r"url must be host:port without a scheme"),
    ({"url": "127.0.0.1"}, r"url must be host:port"),
    ({"protocol": "rest"}, r"protocol must be one of grpc, http, got 'rest'"),
    ({"concurrency": ()}, r"concurrency must be a non-empty sequence"),
    ({"concurrency": 4}, r"concurrency must be a non-empty sequence"),
    ({"concurrency": (1, 0)}, r"concurrency level must be a positive integer, got 0"),
    ({"concurrency": (1, 2.5)}, r"concurrency level must be a positive integer, got 2.5"),
    ({"concurrency": (4, 2)}, r"strictly increasing, got \(4, 2\)"),
    ({"batch_size": 0}, r"batch_size must be a positive integer, got 0"),
    ({"batch_size": True}, r"batch_size must be a positive integer, got True"),
    ({"measurement_interval_ms": -5}, r"measurement_interval_ms must be a positive integer"),
    ({"stability_percentage": 0}, r"stability_percentage must be a number in \(0, 100\]"),
    ({"stability_percentage": 150}, r"stability_percentage must be a number in \(0, 100\]"),
    ({"max_trials": 0}, r"max_trials must be a positive integer"),
    ({"percentile": 100}, r"percentile must be an integer in 1..99 or None, got 100"),
    ({"shared_memory": "gpu"}, r"shared_memory must be one of none, system, cuda, got 'gpu'"),
    ({"timeout_s": 0}, r"timeout_s must be a positive number"),
    ({"extra_args": ("-b", "8")}, r"must not repeat flags that PerfConfig fields set \(-b\)"),
    ({"extra_args": ("--concurrency-range=1:2",)}, r"\(--concurrency-range\)"),
])
def test_invalid_values_say_what_is_valid(kwargs, message):
    kwargs = {"model_name": "recommend", **kwargs}
    with pytest.raises(PerfConfigError, match=message):
        PerfConfig(**kwargs)


def test_config_error_is_value_error():
    assert issubclass(PerfConfigError, ValueError)
