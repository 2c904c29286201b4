"""PerfConfig: one perf_analyzer measurement of one served model, as validated data.

    from recdeploy.perf.config import PerfConfig
    config = PerfConfig(model_name="recommend", url="127.0.0.1:8001", concurrency=(1, 2, 4),
                        input_data=Path("reports/perf/input_data.json"))

Field names mirror the ``recdeploy perf`` flags and perf_analyzer's own options. Every
mistake a user can make raises :class:`PerfConfigError` (a ``ValueError``) saying what is
valid. Round-trips through JSON with :meth:`PerfConfig.to_dict` / :meth:`PerfConfig.from_dict`.
"""
from __future__ import annotations

import dataclasses
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOLS = ("grpc", "http")
SHARED_MEMORY = ("none", "system", "cuda")

# Flags that build_argv owns: passing them again through extra_args would silently
# contradict a field (perf_analyzer keeps the last occurrence).
MANAGED_FLAGS = frozenset({
    "-m", "-u", "-i", "-b", "-f", "-p", "-s", "-r",
    "--concurrency-range", "--measurement-interval", "--stability-percentage", "--max-trials",
    "--percentile", "--input-data", "--shared-memory", "--collect-metrics", "--metrics-url",
})


class PerfConfigError(ValueError):
    """A PerfConfig field has a value perf_analyzer (or this driver) cannot use."""


def _positive_int(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise PerfConfigError(f"{name} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise PerfConfigError(f"{name} must be a positive integer, got {number}")
    return number


@dataclass(frozen=True)
class PerfConfig:
    model_name: str
    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    # Strictly increasing. One perf_analyzer process per level in run_sweep (any list,
    # e.g. 1,2,4,8); a single process with --concurrency-range in run() (needs a
    # constant step, e.g. 2,4,6).
    concurrency: tuple[int, ...] = (1,)
    # Users per request (-b). perf_analyzer counts every batch row as one inference, so
    # its infer/s is already rows (= recommendations) per second, not requests.
    batch_size: int = 1
    # perf_analyzer --input-data JSON (see input_data.py); None = its random data, which
    # for USER_ID means arbitrary ids: only for smoke tests.
    input_data: Path | None = None
    # 2 s windows instead of perf_analyzer's 5 s: the python-backend ensembles here
    # stabilise within three windows at this length on 2 CPU cores.
    measurement_interval_ms: int = 2000
    stability_percentage: float = 10.0
    max_trials: int = 10
    # None: stabilise on average latency (perf_analyzer's default). p50..p99 are always
    # reported in the CSV either way.
    percentile: int | None = None
    shared_memory: str = "none"
    # Prometheus endpoint (host:port/metrics); set it to add --collect-metrics. On a CPU
    # machine that only adds empty GPU columns and warnings.
    metrics_url: str | None = None
    # None: derived from the measurement settings (see timeout_for).
    timeout_s: float | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.model_name):
            raise PerfConfigError(
                f"model_name must be a Triton model name (letters, digits, '_', '-', '.'), got {self.model_name!r}")
        if not isinstance(self.url, str) or not re.fullmatch(r"[^\s:/]+:\d{1,5}", self.url):
            raise PerfConfigError(
                f"url must be host:port without a scheme (e.g. 127.0.0.1:8001 for gRPC, "
                f"127.0.0.1:8000 for HTTP), got {self.url!r}")
        if self.protocol not in PROTOCOLS:
            raise PerfConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        self._set("concurrency", self._check_concurrency(self.concurrency))
        self._set("batch_size", _positive_int("batch_size", self.batch_size))
        if self.input_data is not None:
            self._set("input_data", Path(self.input_data))
        self._set("measurement_interval_ms", _positive_int("measurement_interval_ms", self.measurement_interval_ms))
        if isinstance(self.stability_percentage, bool) or not isinstance(self.stability_percentage, (int, float)) \
                or not 0 < self.stability_percentage <= 100:
            raise PerfConfigError(
                f"stability_percentage must be a number in (0, 100], got {self.stability_percentage!r}")
        self._set("max_trials", _positive_int("max_trials", self.max_trials))
        if self.percentile is not None:
            if _positive_int("percentile", self.percentile) > 99:
                raise PerfConfigError(f"percentile must be an integer in 1..99 or None, got {self.percentile}")
        if self.shared_memory not in SHARED_MEMORY:
            raise PerfConfigError(
                f"shared_memory must be one of {', '.join(SHARED_MEMORY)}, got {self.shared_memory!r}")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise PerfConfigError(f"timeout_s must be a positive number of seconds or None, got {self.timeout_s!r}")
        self._set("extra_args", tuple(str(arg) for arg in self.extra_args))
        clashes = sorted({arg.split("=", 1)[0] for arg in self.extra_args} & MANAGED_FLAGS)
        if clashes:
            raise PerfConfigError(
                f"extra_args must not repeat flags that PerfConfig fields set ({', '.join(clashes)}); "
                f"set the field instead")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalise a field of this frozen instance

    @staticmethod
    def _check_concurrency(levels: Any) -> tuple[int, ...]:
        if isinstance(levels, (int, str)) or not levels:
            raise PerfConfigError(
                f"concurrency must be a non-empty sequence of positive integers such as (1, 2, 4), got {levels!r}")
        checked = tuple(_positive_int("concurrency level", level) for level in levels)
        if any(b <= a for a, b in zip(checked, checked[1:])):
            raise PerfConfigError(f"concurrency levels must be strictly increasing, got {checked}")
        return checked

    # ---- derived views ---------------------------------------------------------------
    def at_concurrency(self, level: int) -> PerfConfig:
        """This config restricted to one concurrency level (what run_sweep runs per step)."""
        return dataclasses.replace(self, concurrency=(level,))

    def with_shorter_window(self) -> PerfConfig | None:
        """Half the window and at most 5 trials (floor 500 ms, 3 trials); None if already there.

        The retry for a level whose perf_analyzer ran away (see ``analyzer.run_level``)."""
        interval = max(500, self.measurement_interval_ms // 2)
        trials = max(3, min(5, self.max_trials))
        if (interval, trials) == (self.measurement_interval_ms, self.max_trials):
            return None
        return dataclasses.replace(self, measurement_interval_ms=interval, max_trials=trials)

    def with_longer_window(self) -> PerfConfig:
        """Twice the window: the retry for a level perf_analyzer could not stabilise."""
        return dataclasses.replace(self, measurement_interval_ms=2 * self.measurement_interval_ms)

    def concurrency_step(self) -> int | None:
        """The constant step between levels (1 for a single level); None if there is none."""
        steps = {b - a for a, b in zip(self.concurrency, self.concurrency[1:])}
        if not steps:
            return 1
        return steps.pop() if len(steps) == 1 else None

    def timeout_for(self, levels: int) -> float:
        """Wall-clock limit for one perf_analyzer process covering `levels` levels.

        Worst case per level is max_trials windows, each of which can overrun while it
        waits for in-flight requests; 2x plus 30 s start-up leaves room for both.
        """
        if self.timeout_s is not None:
            return float(self.timeout_s)
        return levels * (30.0 + 2.0 * self.max_trials * self.measurement_interval_ms / 1000.0)

    @property
    def label(self) -> str:
        """Curve / table label: the model, plus the batch size when it is not 1."""
        return self.model_name if self.batch_size == 1 else f"{self.model_name} (batch {self.batch_size})"

    # ---- JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["concurrency"] = list(self.concurrency)
        data["extra_args"] = list(self.extra_args)
        data["input_data"] = None if self.input_data is None else str(self.input_data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerfConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PerfConfigError(f"unknown PerfConfig field(s) {unknown}; valid: {sorted(known)}")
        values = dict(data)
        for name in ("concurrency", "extra_args"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)
