"""ASMR: activation-sharing multi-resolution coordinate network (Li, Luo, Xu, Wong, ICLR 2024,
"Activation-Sharing Multi-Resolution Coordinate Networks for Efficient Inference").

Each axis of the integer pixel index is written in a mixed radix of ``L`` digits, the most
significant (coarsest) first: ``col = sum_k d_k * prod_{j>k} bases_x[j]`` (rows alike). The
digit pair of level ``k``, scaled to ``(-1, 1)``, is ``x_k [2]``. The network is a SIREN of
``L - 1`` sine layers whose input is the coarsest level and whose layer ``i`` is modulated by
level ``i + 1`` through a bias-free linear map (as in the authors' code, stevolopolis/asmr
``models/asmr.py``):

    h_{-1} = x_0
    h_i = sin(w0 (W_i h_{i-1} + b_i + w0 M_i x_{i+1})),   i = 0 .. L-2
    rgb = W_out h_{L-2} + b_out

The modulation is scaled by ``w0`` before the sine's own ``w0`` and ``M_i`` keeps PyTorch's
default ``U(-1/sqrt(2), 1/sqrt(2))``, as in the authors' code (``Modulator.forward`` returns
``w0 * linear(x)``): under Adam this makes the per-level digit embeddings move ``w0`` times
faster, which the fit needs (kodim05 at 192x128, 200 full-batch steps at 1e-4: 28.2 dB without
the factor, 32.0 dB with it).

``W_i h_{i-1}`` depends only on the levels ``<= i``, so at inference it is computed once per
cell of that coarse grid and repeated; :meth:`ASMRField.render_grid` does this, only the last
sine layer's activation and the output layer run per pixel. Training
(:meth:`ASMRField.forward`) evaluates per coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import Tensor, nn

from nfplug.api import API_VERSION, FieldContext, ImageField, check, require_range
from nfplug.errors import NfplugError
from nfplug.nn import siren_uniform_


def factorize(size: int, levels: int) -> Tuple[int, ...]:
    """Split ``size`` into ``levels`` integer bases whose product is ``size``, as balanced as
    its prime factors allow, ascending (the finest level gets the largest base, which keeps
    the most work on the shared coarse grids)."""
    primes, n, p = [], size, 2
    while n > 1:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1 if p == 2 else 2
        if p * p > n and n > 1:
            primes.append(n)
            break
    bins = [1] * levels
    for q in sorted(primes, reverse=True):
        bins[bins.index(min(bins))] *= q
    return tuple(sorted(bins))


def digits(index: Tensor, bases: Tuple[int, ...]) -> Tensor:
    """Integer indices ``[N]`` -> mixed-radix digits ``[N, L]`` scaled to ``(-1, 1)`` (0 for base 1),
    most significant first."""
    out, stride = [], math.prod(bases)
    for base in bases:
        stride //= base
        d = torch.div(index, stride, rounding_mode="floor") % base
        out.append((2 * d + 1).float() / base - 1)
    return torch.stack(out, dim=-1)


class ASMRField(ImageField):
    """Multi-resolution SIREN with per-level modulators; shared-activation grid rendering."""

    default_lr = 1e-4  # a SIREN underneath; the authors use Adam at 1e-4 (cosine-annealed to 1e-5 over 10k steps)

    @dataclass(frozen=True)
    class Config:
        levels: int = 4
        """Number of resolution levels L >= 2 (L - 1 sine layers + the output layer, L linear layers
        as in the paper's "4-layer" Kodak model); ignored when bases are given."""
        hidden_features: int = 256
        """Width of every sine layer."""
        omega_0: float = 30.0
        """Frequency factor w0 of every sine."""
        bases_x: Tuple[int, ...] = ()
        """Radix of each level along x (columns), coarsest first; product = image width. Empty: factorize the width."""
        bases_y: Tuple[int, ...] = ()
        """Radix of each level along y (rows), coarsest first; product = image height. Empty: factorize the height."""

        def validate(self) -> None:
            require_range(self.levels, "--field.levels", 2, 32)  # an axis of < 2^32 pixels has <= 32 prime factors
            require_range(self.hidden_features, "--field.hidden-features", 1)
            require_range(self.omega_0, "--field.omega-0", 0, low_open=True)
            require_range(self.bases_x, "--field.bases-x", 1)
            require_range(self.bases_y, "--field.bases-y", 1)
            n_x, n_y = len(self.bases_x) or self.levels, len(self.bases_y) or self.levels  # empty: --field.levels
            check(n_x == n_y, "--field.bases-x", f"must have the same length as --field.bases-y (empty: --field.levels), got {n_x} and {n_y}")
            check(2 <= n_x <= 32, "--field.bases-x", f"must have between 2 and 32 entries (levels), got {n_x}")

    description = "multi-resolution SIREN with activation sharing (ASMR, Li et al. 2024), images only"
    api_version = API_VERSION
    tasks = ("image",)

    def __init__(self, config: "ASMRField.Config", context: FieldContext) -> None:
        super().__init__(config, context)
        c = config  # validated by Field.__init__; the bases' products depend on the image
        self.bases_x = self._bases(c.bases_x, 1, "x")
        self.bases_y = self._bases(c.bases_y, 0, "y")
        self.width, self.height = math.prod(self.bases_x), math.prod(self.bases_y)
        levels, f = len(self.bases_x), c.hidden_features
        widths = [2] + [f] * (levels - 1) + [context.out_channels]
        self.net = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        # Modulators keep nn.Linear's default init, as in the authors' code (no SIREN init on them).
        self.modulators = nn.ModuleList(nn.Linear(2, f, bias=False) for _ in range(levels - 1))
        siren_uniform_(self.layers(), c.omega_0)

    def _bases(self, given: Tuple[int, ...], axis: int, name: str) -> Tuple[int, ...]:
        size = None if self.context.resolution is None else self.context.resolution[axis]
        if given:
            if size is not None and math.prod(given) != size:
                raise NfplugError(f"--field.bases-{name}: the bases' product must be the image's {'width' if axis else 'height'}, {size}, got {tuple(given)}")
            return tuple(given)
        if size is None:
            raise NfplugError(f"--field.bases-{name}: the image size is unknown, give the bases explicitly")
        return factorize(size, self.config.levels)

    def layers(self) -> List[nn.Linear]:
        """``L - 1`` modulated sine layers (the first reads ``x_0``), linear output layer (modulators excluded)."""
        return list(self.net)

    def level_inputs(self, col: Tensor, row: Tensor) -> Tensor:
        """Pixel indices ``col [N]``, ``row [N]`` (long) -> per-level inputs ``x [N, L, 2]`` (x digit, y digit)."""
        return torch.stack([digits(col, self.bases_x), digits(row, self.bases_y)], dim=-1)

    def forward(self, coords: Tensor) -> Tensor:
        """``coords [N, 2]`` in ``[-1, 1]`` -> ``rgb [N, C]`` (raw linear output), one pixel at a time.

        Coordinates snap to the nearest pixel centre: the digits are discrete."""
        size = torch.tensor([self.width, self.height], device=coords.device, dtype=coords.dtype)
        pix = torch.round((coords + 1) / 2 * size - 0.5).long()
        col = pix[:, 0].clamp(0, self.width - 1)
        row = pix[:, 1].clamp(0, self.height - 1)
        x = self.level_inputs(col, row).to(coords.dtype)
        w0 = self.config.omega_0
        h = x[:, 0]
        for i, modulator in enumerate(self.modulators):
            h = torch.sin(w0 * (self.net[i](h) + w0 * modulator(x[:, i + 1])))
        return self.net[-1](h)

    def render_grid(self) -> Tensor:
        """The whole image ``[H, W, C]`` with shared activations: layer ``i``'s matrix product runs
        once per cell of the grid of levels ``<= i``, is repeated to the next level's grid and gets
        that level's modulation (a ``[b_y, b_x, F]`` table, times ``w0``, tiled) added."""
        w0, device = self.config.omega_0, self.net[0].weight.device
        tables = [self._level_table(k, device) for k in range(len(self.bases_x))]
        h = tables[0]  # [b_y0, b_x0, 2]
        for i, modulator in enumerate(self.modulators):
            z = self.net[i](h)
            by, bx = self.bases_y[i + 1], self.bases_x[i + 1]
            rows, cols = z.shape[:2]
            z = z.repeat_interleave(by, dim=0).repeat_interleave(bx, dim=1)
            h = torch.sin(w0 * (z + w0 * modulator(tables[i + 1]).repeat(rows, cols, 1)))
        return self.net[-1](h)

    def _level_table(self, k: int, device: torch.device) -> Tensor:
        """Every digit pair of level ``k`` -> ``[b_y, b_x, 2]`` scaled inputs ``(x digit, y digit)``."""
        by, bx = self.bases_y[k], self.bases_x[k]
        dy = (2 * torch.arange(by, device=device) + 1).float() / by - 1
        dx = (2 * torch.arange(bx, device=device) + 1).float() / bx - 1
        return torch.stack(torch.meshgrid(dx, dy, indexing="xy"), dim=-1)

    def inference_macs_per_sample(self) -> float:
        """Inference renders through :meth:`render_grid`: the shared count."""
        return self.macs_per_sample(shared=True)

    def macs_per_sample(self, shared: bool) -> float:
        """Multiply-accumulates per pixel to render the whole image.

        Per coordinate (``shared=False``): every layer and modulator once per pixel. Shared (the
        paper's accounting, as the authors' ``shared_forward``): each layer's MACs scaled by the
        fraction of the pixel grid it runs on; layer ``i``'s matrix on the grid of levels ``<= i``,
        modulator ``i`` on level ``i + 1``'s ``b_y b_x`` digit table, the output layer on every pixel."""
        cells = [bx * by for bx, by in zip(self.bases_x, self.bases_y)]
        pixels = self.width * self.height
        macs = 0.0
        for i, (layer, modulator) in enumerate(zip(self.net, self.modulators)):
            fraction = math.prod(cells[: i + 1]) / pixels if shared else 1.0
            mod_fraction = cells[i + 1] / pixels if shared else 1.0
            macs += layer.in_features * layer.out_features * fraction
            macs += modulator.in_features * modulator.out_features * mod_fraction
        return macs + self.net[-1].in_features * self.net[-1].out_features
