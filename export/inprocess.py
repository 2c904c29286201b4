"""The same pipeline as the served ensemble, in-process: lookup -> ONNX Runtime -> top-K.

    rec = InProcessRecommender(Path("model_repository"))
    ids, scores = rec.recommend(np.array([42, 7]), k=10)

It runs the repository's own artifacts and the very numpy functions the python models run,
so "served equals offline" compares Triton's plumbing, not two implementations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recdeploy.train.onnx_io import cpu_session
from recdeploy.export.triton_python import load_python_model

lookup_module = load_python_model("feature_lookup")
topk_module = load_python_model("topk")


class InProcessRecommender:
    def __init__(self, repo: Path, variant_scorer: str = "scorer", threads: int = 2):
        repo = Path(repo)
        self.table = lookup_module.UserTable.load(repo / "feature_lookup" / "1")
        self.item_ids = np.load(repo / "topk" / "1" / "item_ids.npy")
        self.popularity = np.load(repo / "topk" / "1" / "popularity.npy")
        self.session = cpu_session(repo / variant_scorer / "1" / "model.onnx", threads)

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, seen, known = lookup_module.lookup_users(np.asarray(user_ids, dtype=np.int64), self.table)
        scores = self.session.run(["SCORES"], {"USER_INDEX": index})[0]
        k = topk_module.parse_k(np.array([k], dtype=np.int32), len(self.item_ids))
        return topk_module.top_k(scores, seen, known, k, self.popularity, self.item_ids)
