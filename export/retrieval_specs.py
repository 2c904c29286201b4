"""The retrieval scenario's Triton models and ensemble: feature lookup -> scorer -> top-K.

    specs = retrieval_pipeline(n_items=1682)            # full model
    specs = retrieval_pipeline(n_items=1682, variant="int8")   # scorer_int8 + recommend_int8

Variants share feature_lookup and topk; each gets its own scorer and ensemble, so one server
compares them side by side.
"""
from __future__ import annotations

from dataclasses import dataclass

from recdeploy.export.triton_config import EnsembleSpec, EnsembleStep, ModelSpec, TensorSpec, check_ensemble

MAX_BATCH = 256


@dataclass(frozen=True)
class RetrievalPipeline:
    lookup: ModelSpec
    scorer: ModelSpec
    topk: ModelSpec
    ensemble: EnsembleSpec

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return (self.lookup, self.scorer, self.topk)


def suffixed(name: str, variant: str) -> str:
    return name if variant in ("", "full") else f"{name}_{variant}"


def lookup_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name="feature_lookup", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)),),
        outputs=(TensorSpec("USER_INDEX", "INT64", (1,)), TensorSpec("SEEN_ITEMS", "INT64", (-1,)),
                 TensorSpec("IS_KNOWN", "BOOL", (1,))))


def scorer_spec(n_items: int, variant: str = "", max_batch: int = MAX_BATCH,
                threads: int = 2) -> ModelSpec:
    return ModelSpec(
        name=suffixed("scorer", variant), platform="onnxruntime_onnx", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_INDEX", "INT64", (1,)),),
        outputs=(TensorSpec("SCORES", "FP32", (n_items,)),),
        # read by the stock onnxruntime backend and by our python-based one alike
        parameters=(("intra_op_thread_count", str(threads)),))


def topk_spec(n_items: int, max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name="topk", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("SCORES", "FP32", (n_items,)), TensorSpec("SEEN_ITEMS", "INT64", (-1,)),
                TensorSpec("IS_KNOWN", "BOOL", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("TOP_SCORES", "FP32", (-1,))))


def ensemble_spec(variant: str = "", max_batch: int = MAX_BATCH) -> EnsembleSpec:
    scorer = suffixed("scorer", variant)
    return EnsembleSpec(
        name=suffixed("recommend", variant), max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(
            EnsembleStep("feature_lookup", {"USER_ID": "USER_ID"},
                         {"USER_INDEX": "user_index", "SEEN_ITEMS": "seen_items",
                          "IS_KNOWN": "is_known"}),
            EnsembleStep(scorer, {"USER_INDEX": "user_index"}, {"SCORES": "all_scores"}),
            EnsembleStep("topk", {"SCORES": "all_scores", "SEEN_ITEMS": "seen_items",
                                  "IS_KNOWN": "is_known", "K": "K"},
                         {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}),
        ))


def retrieval_pipeline(n_items: int, variant: str = "", max_batch: int = MAX_BATCH) -> RetrievalPipeline:
    pipeline = RetrievalPipeline(lookup=lookup_spec(max_batch),
                                 scorer=scorer_spec(n_items, variant, max_batch),
                                 topk=topk_spec(n_items, max_batch),
                                 ensemble=ensemble_spec(variant, max_batch))
    check_ensemble(pipeline.ensemble, {m.name: m for m in pipeline.models})
    return pipeline


# ------------------------------------------------------------------ ANN entries
# feature_lookup -> ann_<kind> (python: FAISS search, seen filter, exact re-rank / fallback)

def ann_model_name(key: str) -> str:
    """key: an AnnConfig's ``key`` (its kind, or kind_label)."""
    return f"ann_{key}"


def ann_spec(key: str, max_batch: int = MAX_BATCH, threads: int = 1) -> ModelSpec:
    return ModelSpec(
        name=ann_model_name(key), backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_INDEX", "INT64", (1,)), TensorSpec("SEEN_ITEMS", "INT64", (-1,)),
                TensorSpec("IS_KNOWN", "BOOL", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("TOP_SCORES", "FP32", (-1,))),
        parameters=(("threads", str(threads)),))


def ann_ensemble_spec(key: str, max_batch: int = MAX_BATCH) -> EnsembleSpec:
    """recommend_ann_<key>: the recommend contract, two steps."""
    model = ann_spec(key, max_batch)
    spec = EnsembleSpec(
        name=f"recommend_{model.name}", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(
            EnsembleStep("feature_lookup", {"USER_ID": "USER_ID"},
                         {"USER_INDEX": "user_index", "SEEN_ITEMS": "seen_items",
                          "IS_KNOWN": "is_known"}),
            EnsembleStep(model.name, {"USER_INDEX": "user_index", "SEEN_ITEMS": "seen_items",
                                      "IS_KNOWN": "is_known", "K": "K"},
                         {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}),
        ))
    check_ensemble(spec, {"feature_lookup": lookup_spec(max_batch), model.name: model})
    return spec
