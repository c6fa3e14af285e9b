"""Fixed input encodings: NeRF positional (Fourier) encoding and spherical harmonics."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def positional_encoding(x: Tensor, n_frequencies: int, include_input: bool = True) -> Tensor:
    """NeRF's ``gamma(p)`` (Mildenhall et al. 2020, eq. 4), applied per coordinate.

    Args:
        x: ``[N, D]`` coordinates, expected roughly in ``[-1, 1]``.
        n_frequencies: ``L``; frequencies ``2^k pi`` for ``k = 0 .. L - 1``.
        include_input: prepend ``x`` itself (as NeRF's code does).

    Returns:
        ``[N, D * (include_input + 2 L)]``: ``[x, sin(2^0 pi x), cos(2^0 pi x), ...]``
        with the ``D`` coordinates innermost.
    """
    freqs = math.pi * 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)  # [L]
    angles = (x[:, None, :] * freqs[None, :, None]).reshape(x.shape[0], n_frequencies * x.shape[1])  # [N, L * D]
    parts = [x] if include_input else []
    parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, -1)


class PositionalEncoding(nn.Module):
    """Module form of :func:`positional_encoding`: ``[N, D] -> [N, out_dim]``."""

    def __init__(self, in_dim: int, n_frequencies: int, include_input: bool = True) -> None:
        super().__init__()
        self.n_frequencies = n_frequencies
        self.include_input = include_input
        self.out_dim = in_dim * (int(include_input) + 2 * n_frequencies)

    def forward(self, x: Tensor) -> Tensor:
        return positional_encoding(x, self.n_frequencies, self.include_input)


# Real spherical-harmonics constants, bands 0-3 (the basis of instant-ngp's SH encoding).
_C0 = 0.28209479177387814
_C1 = 0.48860251190291987
_C2 = (1.0925484305920792, -1.0925484305920792, 0.94617469575755997, -1.0925484305920792, 0.54627421529603959)
_C3 = (
    0.59004358992664352,
    2.8906114426405538,
    0.45704579946446572,
    0.3731763325901154,
    0.45704579946446572,
    1.4453057213202769,
    0.59004358992664352,
)


def spherical_harmonics(d: Tensor, degree: int = 4) -> Tensor:
    """Real spherical harmonics of unit directions, orthonormal on the sphere.

    Args:
        d: ``[N, 3]`` unit view directions.
        degree: number of bands, 1 to 4 (instant-ngp uses 4).

    Returns:
        ``[N, degree^2]`` basis values, band by band.
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"spherical harmonics degree must be 1..4, got {degree}")
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    out = [torch.full_like(x, _C0)]
    if degree > 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * zz - 0.31539156525251999,
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree > 3:
        out += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (1 - 5 * zz),
            _C3[3] * z * (5 * zz - 3),
            _C3[4] * x * (1 - 5 * zz),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, -1)
