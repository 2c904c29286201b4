"""Bad artifacts: refused before start (manifest) or at load (naming the file); unsafe model
names refused when the repository is written."""
import shutil

import numpy as np
import pytest

from recdeploy.export.repository import ManifestError, verify_manifest, write_manifest, write_model
from recdeploy.export.triton_config import ConfigSpecError, ModelSpec, TensorSpec, build_model_config


@pytest.fixture
def repo_copy(repository, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_serve_refuses_a_repository_that_fails_its_manifest_naming_the_files(repo_copy, capsys):
    from recdeploy.serve.cli import main

    truncate(repo_copy / "scorer" / "1" / "model.onnx")
    (repo_copy / "feature_lookup" / "1" / "user_ids.npy").unlink()
    (repo_copy / "sneaky" / "1").mkdir(parents=True)
    (repo_copy / "sneaky" / "1" / "model.py").write_text("import os\n")
    assert main(["--repository", str(repo_copy), "--http-port", "0", "--grpc-port", "0",
                 "--metrics-port", "0"]) == 1
    err = capsys.readouterr().err
    assert "does not match its manifest" in err
    assert "scorer/1/model.onnx (sha256 differs)" in err
    assert "feature_lookup/1/user_ids.npy (missing)" in err
    assert "sneaky/1/model.py (not in the manifest)" in err
    assert "--no-verify" in err


def test_a_missing_manifest_is_refused(repo_copy, capsys):
    from recdeploy.serve.cli import main

    (repo_copy / "manifest.sha256.json").unlink()
    assert main(["--repository", str(repo_copy), "--grpc-port", "0", "--http-port", "0",
                 "--metrics-port", "0"]) == 1
    assert "manifest.sha256.json is missing" in capsys.readouterr().err


@pytest.mark.integration
def test_corrupted_onnx_is_a_load_error_naming_the_file(repo_copy):
    from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer

    truncate(repo_copy / "scorer" / "1" / "model.onnx", keep=0.3)
    server = TritonServer(ServerConfig(model_repository=repo_copy, startup_timeout_s=90))
    with pytest.raises(ServerStartError, match=r"(?s)failed to load 'scorer'.*cannot load "
                                               r"\S*scorer/1/model\.onnx \(\d+ bytes; corrupted"):
        server.start()
    assert not server.is_alive()


@pytest.mark.parametrize("model, file", [("fused_retrieval_libtorch", "model.pt"),
                                         ("fused_retrieval_aoti", "model.pt2")])
def test_corrupted_torch_file_is_a_load_error_of_the_native_backend_naming_the_file(repo_copy, model, file):
    from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer

    truncate(repo_copy / model / "1" / file, keep=0.3)
    server = TritonServer(ServerConfig(model_repository=repo_copy, startup_timeout_s=90))
    with pytest.raises(ServerStartError, match=rf"(?s)failed to load '{model}'.*libtorch "
                                               rf"backend: cannot load \S*{model}/1/{file} "
                                               r"\(\d+ bytes; corrupted or truncated"):
        server.start()
    assert not server.is_alive()


@pytest.mark.integration
def test_truncated_feature_array_is_a_load_error_naming_the_file(repo_copy):
    from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer

    truncate(repo_copy / "feature_lookup" / "1" / "seen_items.npy")
    truncate(repo_copy / "topk" / "1" / "popularity.npy")
    server = TritonServer(ServerConfig(model_repository=repo_copy, startup_timeout_s=90))
    with pytest.raises(ServerStartError) as error:
        server.start()
    message = str(error.value)
    assert "failed to load 'feature_lookup'" in message and "failed to load 'topk'" in message
    assert "cannot load" in message and "feature_lookup/1/seen_items.npy" in message
    assert "topk/1/popularity.npy" in message


@pytest.mark.parametrize("name", ["../evil", "a/b", "a\\b", "/abs", "..", ".hidden", "x" * 129, ""])
def test_unsafe_model_names_are_refused_when_writing(tmp_path, name):
    from tritonclient.grpc import model_config_pb2 as pb

    with pytest.raises(ConfigSpecError, match="invalid model name"):
        ModelSpec(name=name, backend="python", inputs=(TensorSpec("A", "INT64", (1,)),),
                  outputs=(TensorSpec("B", "INT64", (1,)),))
    with pytest.raises(ConfigSpecError, match=r"no path separators"):
        write_model(tmp_path / "repo", pb.ModelConfig(name=name), {})
    assert not (tmp_path / "evil").exists() and not any(tmp_path.rglob("config.pbtxt"))


def test_an_artifact_name_cannot_escape_its_version_folder(tmp_path):
    spec = ModelSpec(name="m", backend="python", inputs=(TensorSpec("A", "INT64", (1,)),),
                     outputs=(TensorSpec("B", "INT64", (1,)),))
    with pytest.raises(ManifestError, match=r"artifact name '../../x.py' escapes"):
        write_model(tmp_path, build_model_config(spec), {"../../x.py": b"print(1)"})
    assert not (tmp_path.parent / "x.py").exists()


def test_manifest_flags_files_added_after_export(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    np.save(tmp_path / "m" / "1" / "a.npy", np.arange(3))
    write_manifest(tmp_path)
    verify_manifest(tmp_path)
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / "model.py").write_text("")
    with pytest.raises(ManifestError, match=r"m/2/model.py \(not in the manifest\)"):
        verify_manifest(tmp_path)
