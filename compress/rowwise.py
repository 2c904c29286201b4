"""Row-wise INT8 / INT4 embedding tables, dequantized inside the exported graph.

    table = RowwiseTable.quantize(weight, bits=4)     # R x D float -> packed codes + per-row scale
    vectors = table.rows(index)                       # B -> B x D float (gather, then dequantize)
    table.dequantize()                                # R x D float: a constant ONNX Runtime folds
    codes, scale = int8_rows(matrix)                  # numpy R x D -> int8 codes, FP16 scale (catalogues)

INT8 is symmetric (scale = max|row| / 127). INT4 is asymmetric (per-row min and step, the
scheme of Guan et al. 2019) with two codes packed per byte: columns [0, D/2) in the low
nibble, [D/2, D) in the high one, so unpacking is a concat, not an interleave. Scales are
FP16 and unpacking uses only arithmetic (Cast, Floor, Mul, Sub), so the graph runs at opset 17
everywhere. The ONNX file holds the small table; ONNX Runtime folds the constant dequantization
of a whole table at load time, so compute stays FP32 (the saving is file size and transfer).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recdeploy.compress.api import TaskData, register_method
from recdeploy.compress.config import RowwiseConfig
from recdeploy.compress.families import family_of


class RowwiseTable(nn.Module):
    """An R x D table stored as int8 codes (R x D) or packed int4 codes (R x ceil(D/2) uint8)."""
    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None,
                 bits: int, dim: int):
        super().__init__()
        self.bits, self.dim = bits, dim
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale.to(torch.float16))
        self.register_buffer("offset", (offset if offset is not None else torch.zeros_like(scale))
                             .to(torch.float16))

    @classmethod
    def quantize(cls, weight: torch.Tensor, bits: int) -> RowwiseTable:
        weight = weight.detach().float()
        rows, dim = weight.shape
        if bits == 8:
            scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            codes = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
            return cls(codes, scale, None, 8, dim)
        low, high = weight.amin(dim=1), weight.amax(dim=1)
        scale = ((high - low) / 15.0).clamp_min(1e-12)
        # the per-row step and minimum are stored in FP16: quantize against the rounded values
        scale, low = scale.half().float(), low.half().float()
        codes = torch.round((weight - low[:, None]) / scale[:, None]).clamp(0, 15).to(torch.uint8)
        half = (dim + 1) // 2
        if dim % 2:
            codes = torch.cat([codes, torch.zeros(rows, 1, dtype=torch.uint8)], dim=1)
        packed = codes[:, :half] + 16 * codes[:, half:]
        return cls(packed, scale, low, 4, dim)

    def _dequantized_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (N x C) -> float codes N x D (int4: unpacked, offset not yet applied)"""
        x = codes.float()
        if self.bits == 8:
            return x
        high = torch.floor(x / 16.0)
        return torch.cat([x - 16.0 * high, high], dim=1)[:, :self.dim]

    def _dequantize(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        values = self._dequantized_codes(codes) * scale.float()[:, None]
        return values + offset.float()[:, None] if self.bits == 4 else values

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (B) -> B x D float"""
        return self._dequantize(self.codes[index], self.scale[index], self.offset[index])

    def dequantize(self) -> torch.Tensor:
        """The whole table, R x D float. No row index: exported, an arange index would be a
        constant of 8 bytes a row, twice the int4 codes it gathers."""
        return self._dequantize(self.codes, self.scale, self.offset)


def int8_rows(matrix: np.ndarray, block: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """matrix R x D float -> (codes R x D int8, scale R float16), value = code * scale: the INT8
    scheme of ``RowwiseTable``, for numpy catalogues (the ANN step's re-rank copy, the cost
    curve's exact INT8). Block by block: quantizing 10^7 rows at once takes several copies."""
    tables = [RowwiseTable.quantize(torch.from_numpy(np.ascontiguousarray(matrix[s:s + block], np.float32)), bits=8)
              for s in range(0, len(matrix), block)]
    if not tables:
        return np.zeros((0, matrix.shape[1]), np.int8), np.zeros(0, np.float16)
    return (np.concatenate([t.codes.numpy() for t in tables]),
            np.concatenate([t.scale.numpy() for t in tables]))


@register_method(RowwiseConfig)
def rowwise(model: nn.Module, config: RowwiseConfig, data: TaskData | None = None) -> nn.Module:
    """The family's served module with its tables row-wise quantized."""
    return family_of(model).rowwise_module(model, config.bits).eval()
