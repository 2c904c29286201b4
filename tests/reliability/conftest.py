"""A real tritonserver on the session's exported ML-100k repository (model control off,
manifest verified), shared by the reliability tests; and a second, different scorer export."""
import pytest


@pytest.fixture(scope="session")
def rel_server(repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=repository, verify_manifest=True)) as running:
        yield running


@pytest.fixture(scope="session")
def reference(repository):
    from recdeploy.export.scenarios.retrieval import InProcessRecommender
    return InProcessRecommender(repository)


@pytest.fixture(scope="session")
def other_scorer_onnx(tmp_path_factory, ml100k):
    """The scorer of a second two-tower (1 epoch, another seed): same catalogue, other lists."""
    import numpy as np

    from recdeploy.train.config import TrainConfig
    from recdeploy.train.data import leave_one_out
    from recdeploy.train.models.two_tower import RetrievalScorer
    from recdeploy.train.onnx_io import export_onnx
    from recdeploy.train.tasks.retrieval_loo import train

    config = TrainConfig(dataset="ml-100k", dim=32, epochs=1, batch_size=2048, lr=0.02, seed=1)
    model = train(config, ml100k, leave_one_out(ml100k), progress=False).model
    users = np.arange(16, dtype=np.int64).reshape(-1, 1)
    path = tmp_path_factory.mktemp("scorer_v2") / "model.onnx"
    return export_onnx(RetrievalScorer(model).eval(), {"USER_INDEX": users}, ["SCORES"], path)
