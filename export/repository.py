"""Writing a Triton model repository: config.pbtxt + version folder per model, and a manifest.

    write_model(repo, config, {"model.onnx": path_or_bytes})
    write_manifest(repo)      # manifest.sha256.json: sha256 of every file under the repository

Building configs is elsewhere (triton_config.py, pure); this module only touches the disk.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from recdeploy.export.triton_config import config_text, validate_model_name

MANIFEST = "manifest.sha256.json"


class ManifestError(ValueError):
    pass


def write_model(repo: Path, config: pb.ModelConfig, files: Mapping[str, Path | bytes],
                version: int = 1) -> Path:
    """Write <repo>/<name>/config.pbtxt and <repo>/<name>/<version>/<files>; returns the model dir."""
    name = validate_model_name(config.name)
    model_dir = Path(repo) / name
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(config_text(config))
    for filename, content in files.items():
        target = version_dir / filename
        if target.resolve().parent != version_dir.resolve():
            raise ManifestError(f"artifact name {filename!r} escapes {version_dir}")
        if isinstance(content, (bytes, bytearray)):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    return model_dir


def clear_repository(repo: Path) -> None:
    """Remove earlier models (stale variants would otherwise be served); keep loose files."""
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    for child in repo.iterdir():
        if child.is_dir():
            shutil.rmtree(child)


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file (no pickles), for write_model's artifacts."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _artifact_files(repo: Path) -> list[Path]:
    return sorted(p for p in Path(repo).rglob("*")
                  if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts)


def write_manifest(repo: Path) -> Path:
    repo = Path(repo)
    entries = {str(p.relative_to(repo)): sha256_file(p) for p in _artifact_files(repo)}
    path = repo / MANIFEST
    path.write_text(json.dumps(entries, indent=2, sort_keys=True))
    return path


def verify_manifest(repo: Path) -> None:
    """Raise ManifestError naming every file that is missing, whose sha256 differs, or that
    the manifest does not list (a model dropped into the repository after export would
    otherwise be served unchecked). `recdeploy serve` calls this before starting."""
    repo = Path(repo)
    path = repo / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path} is missing; re-export the repository")
    expected = json.loads(path.read_text())
    bad = [f"{name} (missing)" for name in expected if not (repo / name).is_file()]
    bad += [f"{name} (sha256 differs)" for name, digest in expected.items()
            if (repo / name).is_file() and sha256_file(repo / name) != digest]
    bad += [f"{name} (not in the manifest)" for name in
            (str(p.relative_to(repo)) for p in _artifact_files(repo)) if name not in expected]
    if bad:
        raise ManifestError(f"repository {repo} does not match its manifest: {', '.join(bad)}")
