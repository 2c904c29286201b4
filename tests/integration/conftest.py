import pytest


@pytest.fixture(scope="session")
def server(repository):
    """The real tritonserver on the exported ML-100k repository, once per session."""
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=repository)) as running:
        yield running
