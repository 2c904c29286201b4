"""Criteo TSV files in, and out: the format of a user's own ``train.txt`` / ``day_N``.

    for chunk in read_tsv_chunks([Path("day_0")], chunk_rows=1_000_000):   # RawChunk each
        chunk.labels, chunk.dense, chunk.ids                               # [n], [n, 13], [n, 26]
    write_tsv(Path("sample.tsv"), chunk)                                   # the same layout

Reading streams: one chunk of rows at a time, so a 10^7-row file never sits in RAM as text.
Parsing is vectorized per chunk (one ``split`` per line, then numpy over the whole chunk).
A line without 40 tab-separated fields, a label other than 0/1, a dense value that is not a
number or a categorical that is not hex raises ``CriteoFormatError`` naming file and line.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.train.criteo.schema import COLUMNS, MISSING_ID, N_DENSE, N_SPARSE, hex_ids


class CriteoFormatError(ValueError):
    """A file that is not in the Criteo TSV layout (the message names file and line)."""


@dataclass(frozen=True)
class RawChunk:
    """Rows as read: labels float32 [n] (0/1), dense float64 [n, 13] raw counts (NaN =
    missing), ids int64 [n, 26] raw 32-bit hashed ids (MISSING_ID = missing)."""
    labels: np.ndarray
    dense: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _parse(lines: list[bytes], where: str, first_line: int) -> RawChunk:
    rows = [line.rstrip(b"\r\n").split(b"\t") for line in lines]
    for k, row in enumerate(rows):
        if len(row) != len(COLUMNS):
            raise CriteoFormatError(f"{where}:{first_line + k}: {len(row)} tab-separated fields, "
                                    f"expected {len(COLUMNS)} (label, I1..I13, C1..C26)")
    table = np.array(rows, dtype="S16")
    labels = table[:, 0]
    if not np.isin(labels, (b"0", b"1")).all():
        k = int(np.flatnonzero(~np.isin(labels, (b"0", b"1")))[0])
        raise CriteoFormatError(f"{where}:{first_line + k}: label {labels[k]!r} is not 0 or 1")
    dense_text = table[:, 1:1 + N_DENSE].copy()
    dense_text[dense_text == b""] = b"nan"
    try:
        dense = dense_text.astype(np.float64)
    except ValueError as err:
        raise CriteoFormatError(f"{where}:{first_line}..: a dense value is not a number ({err})") from err
    cats = table[:, 1 + N_DENSE:]
    if np.any(np.char.str_len(cats) > 8):
        k = int(np.flatnonzero(np.any(np.char.str_len(cats) > 8, axis=1))[0])
        raise CriteoFormatError(f"{where}:{first_line + k}: a categorical longer than 8 hex digits")
    try:
        ids = hex_ids(cats.reshape(-1)).reshape(len(rows), N_SPARSE)
    except ValueError as err:
        raise CriteoFormatError(f"{where}:{first_line}..: {err}") from err
    return RawChunk(labels.astype(np.float32), dense, ids)


def read_tsv_chunks(paths: Iterable[Path], chunk_rows: int = 500_000) -> Iterator[RawChunk]:
    """Every row of the files, in order, as RawChunks of at most ``chunk_rows`` rows."""
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise CriteoFormatError(f"{path}: no such file (Criteo TSV: label, I1..I13, C1..C26)")
        with path.open("rb") as f:
            lines: list[bytes] = []
            first = 1
            for number, line in enumerate(f, start=1):
                if line.strip():
                    lines.append(line)
                if len(lines) == chunk_rows:
                    yield _parse(lines, str(path), first)
                    lines, first = [], number + 1
            if lines:
                yield _parse(lines, str(path), first)


def format_rows(chunk: RawChunk) -> list[str]:
    """RawChunk -> TSV lines (no newline) in the Criteo layout, missing values empty."""
    lines = []
    for label, dense, ids in zip(chunk.labels, chunk.dense, chunk.ids):
        fields = [str(int(label))]
        fields += ["" if np.isnan(x) else str(int(x)) for x in dense]
        fields += ["" if i == MISSING_ID else f"{int(i):08x}" for i in ids]
        lines.append("\t".join(fields))
    return lines


def write_tsv(path: Path, chunks: Iterable[RawChunk]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for chunk in chunks:
            f.write("\n".join(format_rows(chunk)) + "\n")
    return path
