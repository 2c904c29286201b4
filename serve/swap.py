"""Hot swap of a served model's version through Triton's explicit model control API.

    recdeploy serve --repository model_repository --model-control-mode explicit
    publish_version(repo, "scorer", {"model.onnx": new_onnx}, "127.0.0.1:8001")   # -> 2
    rollback(repo, "scorer", "127.0.0.1:8001", retired=Path("retired"))             # -> 1

Why explicit mode and not ``--model-control-mode poll``: with polling the server loads
whatever it finds whenever it looks, so a half-copied version folder or a file that fails
the manifest can go live on its own; here the new version is staged, moved into place with
one rename, checked against the manifest, and only then loaded, by one call whose failure
we see. Triton loads the new version while the old one keeps serving, reloads the
ensembles that use the model, then unloads the old version: in-flight and new requests
keep succeeding (see soak.py for the measured numbers). Rollback moves the newest version
folder out of the repository (kept under ``retired``) and loads again, so the repository on
disk always says what is served. The control API is off by default (mode "none"): a
caller who can reach it can load or unload any model.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from recdeploy.export.repository import ManifestError, verify_manifest, write_manifest


class SwapError(ValueError):
    """A version could not be published or rolled back; the message says why."""


def versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


def _load(url: str, model: str) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        client.load_model(model)
    except InferenceServerException as error:
        hint = (" (start the server with --model-control-mode explicit)"
                if "not allowed" in str(error) else "")
        raise SwapError(f"loading {model!r} on {url} failed: {error}{hint}") from error
    finally:
        client.close()


def publish_version(repo: Path, model: str, files: dict[str, Path], url: str,
                    version: int | None = None) -> int:
    """Add ``<repo>/<model>/<version>/`` (default: newest + 1) from ``files`` and load it.

    The repository must verify against its manifest first (a tampered file must not be
    blessed by the refreshed manifest). If the server refuses the new version, it is taken
    out again (the old one is still being served) and SwapError says why.
    """
    repo, model_dir = Path(repo), Path(repo) / model
    if not (model_dir / "config.pbtxt").is_file():
        raise SwapError(f"{model_dir} is not a model of {repo}")
    try:
        verify_manifest(repo)
    except ManifestError as error:
        raise SwapError(f"not publishing into a repository that fails its manifest: {error}") from error
    existing = versions(model_dir)
    version = version or (max(existing, default=0) + 1)
    if version in existing:
        raise SwapError(f"{model} version {version} exists already; versions: {existing}")
    staging = model_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name, source in files.items():
        if "/" in name or name in ("", ".", ".."):
            raise SwapError(f"artifact name {name!r} must be a plain file name")
        shutil.copyfile(source, staging / name)
    staging.rename(model_dir / str(version))  # one rename: never a half-written version
    write_manifest(repo)
    try:
        _load(url, model)
    except SwapError:
        shutil.rmtree(model_dir / str(version))
        write_manifest(repo)
        raise
    return version


def rollback(repo: Path, model: str, url: str, retired: Path) -> int:
    """Move the newest version of ``model`` to ``retired/<model>/<version>`` and load again;
    returns the version now served."""
    repo, model_dir = Path(repo), Path(repo) / model
    existing = versions(model_dir)
    if len(existing) < 2:
        raise SwapError(f"{model} has versions {existing}: nothing to roll back to")
    newest = existing[-1]
    if Path(retired).resolve().is_relative_to(repo.resolve()):
        raise SwapError(f"retired folder {retired} must be outside the repository {repo}")
    target = Path(retired) / model / str(newest)
    if target.exists():
        raise SwapError(f"{target} exists; pick another retired folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(model_dir / str(newest)), str(target))
    write_manifest(repo)
    _load(url, model)
    return existing[-2]
