"""recdeploy.compress: pruning and quantization as configs plus one dispatch.

    from recdeploy.compress import compress, preset
    smaller = compress(model, preset("prune-50"), data=data)

``recdeploy compress --run RUN --methods ...`` builds and measures variants (see cli.py).
"""
from recdeploy.compress.api import CalibrationError, MissingDataError, TaskData, compress, register_method
from recdeploy.compress.config import (
                                       PRESETS,
                                       CompressionConfig,
                                       CompressionConfigError,
                                       DynamicInt8Config,
                                       Fp16Config,
                                       PruneConfig,
                                       RowwiseConfig,
                                       StaticInt8Config,
                                       UnknownMethodError,
                                       Variant,
                                       config_from_json,
                                       parse_methods,
                                       parse_variant,
                                       preset,
)

__all__ = ["compress", "preset", "PRESETS", "register_method", "TaskData", "CompressionConfig",
           "PruneConfig", "RowwiseConfig", "DynamicInt8Config", "StaticInt8Config", "Fp16Config",
           "Variant", "parse_variant", "parse_methods", "config_from_json", "CompressionConfigError",
           "UnknownMethodError", "CalibrationError", "MissingDataError"]
