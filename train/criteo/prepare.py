"""Streaming preprocessing: Criteo rows (a user's TSV files or the synthetic generator) ->
vocabularies + memory-mapped arrays the models train on, without the rows ever in RAM at once.

    data = prepare(SyntheticSource(SyntheticCriteo(rows=10**7)), Path("cache/criteo-10m"))
    data = prepare(TsvSource([Path("day_0")]), Path("cache/day0"), min_count=3)
    labels, dense, sparse = data.arrays("train")      # memmaps: [n], [n, 13] float32, [n, 26] int32

Split by position, as Criteo's own benchmarks split by day: the first rows train, the last
``holdout`` share is held out (its first half validation, the rest test). Two passes over the
source: one counts ids on the training rows (the vocabulary), one writes the transformed rows.
The folder also keeps per-row training counts (frequency-aware compression reads them) and,
for synthetic data, every row's true click probability (the Bayes AUC of each part).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from recdeploy.train.criteo.schema import N_DENSE, N_SPARSE, dense_transform
from recdeploy.train.criteo.synthetic import SyntheticCriteo, expected_auc
from recdeploy.train.criteo.tsv import RawChunk, read_tsv_chunks
from recdeploy.train.criteo.vocabulary import Vocabulary, build_vocabulary

PARTS = ("train", "valid", "test")
FORMAT_VERSION = 1


class TsvSource:
    """A user's Criteo TSV files, read in order."""

    def __init__(self, paths: list[Path], chunk_rows: int = 500_000):
        self.paths, self.chunk_rows = [Path(p) for p in paths], chunk_rows

    def describe(self) -> dict:
        return {"kind": "tsv", "files": [str(p.resolve()) for p in self.paths],
                "bytes": [p.stat().st_size for p in self.paths if p.is_file()]}

    def n_rows(self) -> int:
        total = 0
        for path in self.paths:
            with path.open("rb") as f:
                total += sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
        return total

    def chunks(self) -> Iterator[RawChunk]:
        return read_tsv_chunks(self.paths, self.chunk_rows)

    def truth(self, chunk: RawChunk) -> np.ndarray | None:
        return None


class SyntheticSource:
    def __init__(self, data: SyntheticCriteo):
        self.data = data

    def describe(self) -> dict:
        d = self.data
        return {"kind": "synthetic", "rows": d.rows, "scale": d.scale, "zipf": d.zipf, "seed": d.seed,
                "chunk_rows": d.chunk_rows}

    def n_rows(self) -> int:
        return self.data.rows

    def chunks(self) -> Iterator[RawChunk]:
        return self.data.chunks()

    def truth(self, chunk: RawChunk) -> np.ndarray | None:
        return self.data.click_probability(chunk).astype(np.float32)


def _rows_before(chunks: Iterator[RawChunk], stop: int) -> Iterator[RawChunk]:
    seen = 0
    for chunk in chunks:
        if seen >= stop:
            return
        take = min(len(chunk), stop - seen)
        yield chunk if take == len(chunk) else RawChunk(chunk.labels[:take], chunk.dense[:take], chunk.ids[:take])
        seen += take


@dataclass(frozen=True)
class PreparedCriteo:
    """A prepared folder; also what ``load_dataset("criteo")`` returns (name, summary(),
    fingerprint() as every dataset has; n_users 0 and n_items = embedding rows, since a
    Criteo row has no user/item ids)."""
    folder: Path
    meta: dict
    vocab: Vocabulary
    name: str = "criteo"

    @classmethod
    def load(cls, folder: Path) -> PreparedCriteo:
        folder = Path(folder)
        return cls(folder, json.loads((folder / "meta.json").read_text()), Vocabulary.load(folder))

    @property
    def rows_per_field(self) -> tuple[int, ...]:
        return self.vocab.rows_per_field

    @property
    def n_users(self) -> int:
        return 0

    @property
    def n_items(self) -> int:
        return int(sum(self.rows_per_field))

    item_ids = np.zeros(0, dtype=np.int64)
    item_titles: tuple[str, ...] = ()

    def part_range(self, part: str) -> tuple[int, int]:
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        bounds = self.meta["bounds"]
        k = PARTS.index(part)
        return bounds[k], bounds[k + 1]

    def arrays(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """labels float32 [n], dense float32 [n, 13] (transformed), sparse int32 [n, 26] rows."""
        start, stop = self.part_range(part)
        return tuple(np.load(self.folder / f"{name}.npy", mmap_mode="r")[start:stop]
                     for name in ("labels", "dense", "sparse"))

    def truth(self, part: str) -> np.ndarray | None:
        path = self.folder / "truth.npy"
        if not path.is_file():
            return None
        start, stop = self.part_range(part)
        return np.load(path, mmap_mode="r")[start:stop]

    def row_counts(self) -> np.ndarray:
        """int64 [sum(rows_per_field)]: how often each embedding row occurs in training."""
        return np.load(self.folder / "row_counts.npy")

    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    def summary(self) -> str:
        n = self.meta["bounds"]
        bayes = self.meta.get("bayes_auc", {})
        extra = f"; Bayes AUC test {bayes['test']:.4f}" if bayes else ""
        return (f"criteo ({self.meta['source']['kind']}): {n[-1]:,} rows ({n[1]:,} train / "
                f"{n[2] - n[1]:,} valid / {n[3] - n[2]:,} test), click rate "
                f"{self.meta['click_rate']:.3f}, {self.n_items:,} embedding rows over 26 fields{extra}")


def prepare(source, folder: Path, holdout: float = 0.1, min_count: int = 1, max_vocab: int = 0,
            hash_rows: int = 0, progress: bool = True) -> PreparedCriteo:
    """Prepare ``source`` into ``folder`` (reused when it already holds the same preparation)."""
    settings = {"source": source.describe(), "holdout": holdout, "min_count": min_count,
                "max_vocab": max_vocab, "hash_rows": hash_rows, "format": FORMAT_VERSION}
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(folder)
    if (folder / "meta.json").is_file():
        done = PreparedCriteo.load(folder)
        if done.meta.get("fingerprint") == fingerprint:
            return done
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a share between 0 and 1, got {holdout}")
    n = source.n_rows()
    n_train = n - int(round(holdout * n))
    n_valid = (n - n_train) // 2
    if n_train < 1 or n_valid < 1 or n - n_train - n_valid < 1:
        raise ValueError(f"{n} rows cannot be split into train / valid / test with holdout {holdout}")
    folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=2 * n, desc="prepare criteo", unit="row", disable=not progress, unit_scale=True)

    def counted(chunks):
        for chunk in chunks:
            bar.update(len(chunk))
            yield chunk
    vocab = build_vocabulary(counted(_rows_before(source.chunks(), n_train)), min_count, max_vocab, hash_rows)
    bar.update(n - n_train)
    vocab.save(folder)
    out = {name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
           for name, dtype, shape in (("labels", np.float32, (n,)), ("dense", np.float32, (n, N_DENSE)),
                                      ("sparse", np.int32, (n, N_SPARSE)))}
    truth = None
    offsets = np.r_[0, np.cumsum(vocab.rows_per_field)].astype(np.int64)
    counts = np.zeros(offsets[-1], dtype=np.int64)
    position = 0
    for chunk in counted(source.chunks()):
        stop = position + len(chunk)
        rows = vocab.lookup(chunk.ids)
        out["labels"][position:stop] = chunk.labels
        out["dense"][position:stop] = dense_transform(chunk.dense)
        out["sparse"][position:stop] = rows
        if position < n_train:
            seen = rows[:max(0, n_train - position)] + offsets[:-1]
            counts += np.bincount(seen.reshape(-1), minlength=len(counts))
        p = source.truth(chunk)
        if p is not None:
            if truth is None:
                truth = np.lib.format.open_memmap(folder / "truth.npy", mode="w+", dtype=np.float32, shape=(n,))
            truth[position:stop] = p
        position = stop
    bar.close()
    np.save(folder / "row_counts.npy", counts)
    bounds = [0, n_train, n_train + n_valid, n]
    meta = {**settings, "fingerprint": fingerprint, "bounds": bounds,
            "rows_per_field": list(vocab.rows_per_field),
            "click_rate": float(np.asarray(out["labels"]).mean())}
    if truth is not None:
        meta["bayes_auc"] = {part: expected_auc(np.asarray(truth[bounds[k]:bounds[k + 1]]))
                             for k, part in enumerate(PARTS)}
    for array in out.values():
        array.flush()
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return PreparedCriteo.load(folder)
