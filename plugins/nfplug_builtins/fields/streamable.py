"""Streamable neural fields (Cho, Nam, Rho, Ko, Park, "Streamable Neural Fields", ECCV 2022).

The field is K sub-networks of growing width. In every layer, the units part k adds read
every unit of parts ``<= k`` in the layer below and no later unit, so the first k parts are a
complete network on their own: a client holding only them decodes a coarser result. The
output is the sum of every part's contribution (the output layer's columns of part k), so
each new part learns the residual of the parts before it.

- Images: a SIREN (sine layers, omega_0 = 30) whose hidden width grows ``widths[0] ->
  widths[-1]``; as in the authors' code the output layer is scaled by omega_0 and a new
  part's connections from its own units start at zero (it first adds nothing), and the
  learning rate is 2e-4.
- Scenes (the paper has none): part k also owns a group of hash-grid levels, coarse to fine,
  so a part adds both capacity and finer spatial detail; density and colour MLPs are
  streamable ReLU networks after the ``ngp`` field (bias-free, trunc_exp density, sigmoid
  colour of geometry features and the view direction's spherical harmonics).

Training modes (``--field.mode``), carried out by the engine from :meth:`training_stages`:
``progressive`` trains part 1, then freezes it (left out of a fresh optimizer, so it stays
bit-identical) and trains part 2, and so on; ``slimmable`` sums the loss of every k each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nfplug.api import API_VERSION, FieldContext, ImageField, SceneField, TrainingStage, check, require_range
from nfplug.encoding.frequency import spherical_harmonics
from nfplug.encoding.hashgrid import HashGrid
from nfplug.errors import NfplugError
from nfplug.encoding.hashgrid import MAX_RESOLUTION, validate_hash_grid
from nfplug.nn import trunc_exp

IMAGE_WIDTHS = (30, 69, 110, 151)  # the authors' spectral-growing widths for Kodak
SCENE_WIDTHS = (16, 32, 48, 64)  # ngp's hidden width 64 in four parts


class BlockLinear(nn.Module):
    """A linear layer whose part k maps every input unit of parts ``<= k`` to its new outputs.

    Part k is ``nn.Linear(sum(in_sizes[:k]), out_sizes[k - 1])``; decoding ``k`` parts
    assembles their blocks into one block-lower-triangular weight ``[sum(out_sizes[:k]),
    sum(in_sizes[:k])]`` (zeros above the diagonal: earlier units never read later ones).
    """

    def __init__(self, in_sizes: Sequence[int], out_sizes: Sequence[int], bias: bool) -> None:
        super().__init__()
        self.in_ends = [sum(in_sizes[: k + 1]) for k in range(len(in_sizes))]
        self.blocks = nn.ModuleList(nn.Linear(end, n, bias=bias) for end, n in zip(self.in_ends, out_sizes))

    def forward(self, x: Tensor, k: int) -> Tensor:
        """``x [N, sum(in_sizes[:k])]`` -> ``[N, sum(out_sizes[:k])]``."""
        width = self.in_ends[k - 1]
        weight = torch.cat([F.pad(b.weight, (0, width - b.in_features)) for b in self.blocks[:k]])
        bias = torch.cat([b.bias for b in self.blocks[:k]]) if self.blocks[0].bias is not None else None
        return F.linear(x, weight, bias)


class SumLinear(nn.Module):
    """The output layer: the sum of every part's contribution ``W_k h_k`` (plus part 1's bias)."""

    def __init__(self, in_sizes: Sequence[int], out_features: int, bias: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(n, out_features, bias=bias and k == 0) for k, n in enumerate(in_sizes))

    def forward(self, h: Tensor, k: int) -> Tensor:
        """``h [N, sum(in_sizes[:k])]`` -> ``[N, out_features]``."""
        return F.linear(h, torch.cat([b.weight for b in self.blocks[:k]], dim=1), self.blocks[0].bias)


def _new_units(widths: Sequence[int]) -> List[int]:
    """Cumulative widths -> units each part adds."""
    return [b - a for a, b in zip((0, *widths[:-1]), widths)]


class StreamableField(SceneField, ImageField):
    """Sub-networks of growing width decoded from their first k parts (images and scenes)."""

    @dataclass(frozen=True)
    class Config:
        widths: Optional[Tuple[int, ...]] = None
        """Cumulative hidden width after each part, one entry per part (default: 30 69 110 151
        for images, the authors' Kodak widths; 16 32 48 64 for scenes)."""
        mode: Literal["progressive", "slimmable"] = "progressive"
        """progressive: train part 1, freeze it, train part 2, ...; slimmable: every step sums
        the loss of every width."""
        steps_per_stage: int = 0
        """Progressive: steps of each stage (0: --max-steps split evenly over the parts)."""
        hidden_layers: int = 4
        """Images: hidden sine layers after the first (the authors' default 4)."""
        omega_0: float = 30.0
        """Images: frequency factor of every sine layer and scale of the output layer."""
        n_levels: int = 16
        """Scenes: hash-grid levels, split coarse to fine over the parts."""
        n_features_per_level: int = 2
        log2_hashmap_size: int = 17
        base_resolution: int = 16
        max_resolution: int = 2048
        geo_feat_dim: int = 15

        def validate(self) -> None:
            w = self.widths
            increasing = w is None or (len(w) > 0 and all(b > a for a, b in zip((0, *w[:-1]), w)))
            check(increasing, "--field.widths", f"must be increasing positive widths, one per part, got {list(w or ())}")
            require_range(self.steps_per_stage, "--field.steps-per-stage", 0)
            require_range(self.hidden_layers, "--field.hidden-layers", 0)
            require_range(self.omega_0, "--field.omega-0", 0, low_open=True)
            require_range(self.max_resolution, "--field.max-resolution", 1, MAX_RESOLUTION)
            validate_hash_grid(self, (("scene", 3, self.n_levels, self.max_resolution),))
            check(self.base_resolution <= self.max_resolution, "--field.base-resolution", f"must be at most --field.max-resolution ({self.max_resolution})")
            require_range(self.geo_feat_dim, "--field.geo-feat-dim", 0)

    description = "streamable field: parts of growing width decode coarse to fine (Cho et al. 2022)"
    api_version = API_VERSION
    tasks = ("scene", "image")

    def __init__(self, config: "StreamableField.Config", context: FieldContext) -> None:
        super().__init__(config, context)
        c = config
        widths = c.widths if c.widths is not None else (SCENE_WIDTHS if context.task == "scene" else IMAGE_WIDTHS)
        self.widths = tuple(widths)
        new = _new_units(widths)
        zero_new = c.mode == "progressive"
        if context.task == "image":
            self.default_lr = 2e-4  # the authors' learning rate
            inputs = [2] + [0] * (len(new) - 1)  # every part reads the coordinates
            self.hidden = nn.ModuleList([BlockLinear(inputs, new, bias=True)])
            self.hidden.extend(BlockLinear(new, new, bias=True) for _ in range(c.hidden_layers))
            self.out = SumLinear(new, context.out_channels, bias=True)
            _siren_init(self.hidden, self.out, c.omega_0, new, zero_new)
        else:
            if len(widths) > c.n_levels:
                raise NfplugError(f"--field.n-levels ({c.n_levels}) must be at least the number of parts ({len(widths)})")
            self.default_lr = 1e-2
            self.grids = nn.ModuleList(_grid_groups(c, len(widths)))
            features = [g.out_dim for g in self.grids]
            self.density_hidden = BlockLinear(features, new, bias=False)
            self.density_out = SumLinear(new, 1 + c.geo_feat_dim, bias=False)
            colour_in = [c.geo_feat_dim + 16] + [0] * (len(new) - 1)
            self.colour_hidden = nn.ModuleList([BlockLinear(colour_in, new, bias=False), BlockLinear(new, new, bias=False)])
            self.colour_out = SumLinear(new, 3, bias=False)
            if zero_new:
                for layer in (self.density_out, self.colour_hidden[1], self.colour_out):
                    _zero_self_connections(layer, new)

    # ------------------------------------------------------------------ parts and stages

    def n_parts(self) -> int:
        return len(self.widths)

    def _decoded(self, parts: Optional[int]) -> int:
        """Parts a call decodes: ``parts`` (the engine checked it, :func:`nfplug.api.decoding`), or all."""
        return self.n_parts() if parts is None else parts

    def parameter_parts(self) -> Dict[str, int]:
        # Every parameter sits in a per-part module: "...blocks.{k-1}..." or "grids.{k-1}...".
        parts = {}
        for name, _ in self.named_parameters():
            pieces = name.split(".")
            anchor = pieces.index("blocks") if "blocks" in pieces else pieces.index("grids")
            parts[name] = int(pieces[anchor + 1]) + 1
        return parts

    def training_stages(self, max_steps: int) -> List[TrainingStage]:
        n = self.n_parts()
        if self.config.mode == "slimmable":
            return [TrainingStage(start=0, parts=tuple(range(1, n + 1)))]
        span = self.config.steps_per_stage or max(1, max_steps // n)
        return [TrainingStage(start=(k - 1) * span, parts=(k,), frozen=tuple(range(1, k))) for k in range(1, n + 1)]

    # ------------------------------------------------------------------------- decoding

    def forward(self, x: Tensor, d: Union[Tensor, None] = None, parts: Optional[int] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Scene: ``(x [N, 3], d [N, 3]) -> (rgb [N, 3], sigma [N])``; image: ``coords [N, 2] -> rgb [N, C]``;
        decoded from the first ``parts`` parts (None: all)."""
        k = self._decoded(parts)
        if self.context.task == "image":
            omega = self.config.omega_0
            h = x
            for layer in self.hidden:
                h = torch.sin(omega * layer(h, k))
            return omega * self.out(h, k)
        if d is None:
            raise ValueError("the scene task needs view directions d [N, 3]")
        sigma, geo = self._density_and_features(x, k)
        h = torch.cat([geo, spherical_harmonics(d, 4)], dim=-1)
        for layer in self.colour_hidden:
            h = F.relu(layer(h, k))
        return torch.sigmoid(self.colour_out(h, k)), sigma

    def density(self, x: Tensor, parts: Optional[int] = None) -> Tensor:
        """``x [N, 3]`` world positions -> ``sigma [N]`` (0 outside the aabb), from the first ``parts`` parts."""
        return self._density_and_features(x, self._decoded(parts))[0]

    def _density_and_features(self, x: Tensor, k: int) -> Tuple[Tensor, Tensor]:
        u, inside = self.unit_coords(x)
        u = u.clamp(0.0, 1.0)
        features = torch.cat([grid(u) for grid in self.grids[:k]], dim=-1)
        h = self.density_out(F.relu(self.density_hidden(features, k)), k)
        sigma = trunc_exp(h[:, 0] - 1.0)
        return sigma * inside.to(sigma.dtype), h[:, 1:]


def _grid_groups(c: StreamableField.Config, n_parts: int) -> List[HashGrid]:
    """The levels of one ``n_levels`` hash grid (geometric resolutions ``base .. max``), split
    into ``n_parts`` contiguous groups, coarse to fine, one grid each."""
    growth = math.exp((math.log(c.max_resolution) - math.log(c.base_resolution)) / max(1, c.n_levels - 1))
    bounds = [round(k * c.n_levels / n_parts) for k in range(n_parts + 1)]
    grids = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        base = int(round(c.base_resolution * growth**lo))
        top = int(round(c.base_resolution * growth ** (hi - 1)))
        grids.append(HashGrid(3, hi - lo, c.n_features_per_level, c.log2_hashmap_size, base, max(base, top)))
    return grids


@torch.no_grad()
def _siren_init(hidden: nn.ModuleList, out: SumLinear, omega: float, new: List[int], zero_new: bool) -> None:
    """SIREN's init per block: first layer U(+-1/fan_in), later ones U(+-sqrt(6/fan_in)/omega);
    hidden biases keep nn.Linear's U(+-1/sqrt(fan_in)), as in the authors' code; the output bias
    starts at 0."""
    for i, layer in enumerate([*hidden, out]):
        for block in layer.blocks:
            bound = 1.0 / block.in_features if i == 0 else math.sqrt(6.0 / block.in_features) / omega
            block.weight.uniform_(-bound, bound)
    # The output is scaled by omega: nn.Linear's bias draw would start it up to +-omega/sqrt(fan_in) off.
    out.blocks[0].bias.zero_()
    if zero_new:
        for layer in [*hidden[1:], out]:
            _zero_self_connections(layer, new)


@torch.no_grad()
def _zero_self_connections(layer: Union[BlockLinear, SumLinear], new: List[int]) -> None:
    """Progressive init (the authors' code): part k > 1 starts with zero weights from its own
    units of the layer below, so a new part adds nothing until it has trained."""
    for k, block in enumerate(layer.blocks):
        if k > 0:
            block.weight[:, block.in_features - new[k] :] = 0.0
