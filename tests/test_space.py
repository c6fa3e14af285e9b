"""Scene contraction and NDC rays (nfplug.rendering.space): hand cases, inverses, monotonicity,
bounds, and the renderer handing the field contracted positions."""

from __future__ import annotations

import math

import pytest
import torch

from nfplug.config import RenderConfig
from nfplug.rendering.scene_renderer import SceneRenderer
from nfplug.rendering.space import SceneSpace, contract, mean_camera_w2c, ndc_box, ndc_rays, uncontract, world_to_ndc


@pytest.mark.parametrize(
    "kind, y, expected",
    [
        ("sphere", (0.5, -0.2, 0.1), (0.5, -0.2, 0.1)),  # inside the unit ball: identity
        ("sphere", (2.0, 0.0, 0.0), (1.5, 0.0, 0.0)),  # (2 - 1/2) * x/|x|
        ("sphere", (3.0, 4.0, 0.0), (1.08, 1.44, 0.0)),  # |y| = 5: 1.8 * (0.6, 0.8, 0)
        ("cube", (0.9, -0.9, 0.9), (0.9, -0.9, 0.9)),  # inside the unit cube: identity
        ("cube", (2.0, 1.0, 0.0), (1.5, 0.75, 0.0)),  # |y|_inf = 2: 1.5 * (1, 0.5, 0)
        ("none", (7.0, 8.0, 9.0), (7.0, 8.0, 9.0)),
    ],
)
def test_contract_hand_cases(kind, y, expected):
    out = contract(torch.tensor([y], dtype=torch.float64), kind)
    assert torch.allclose(out, torch.tensor([expected], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("kind", ["sphere", "cube"])
def test_contract_inverse_bounded_and_monotone(kind):
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(200, 3, generator=g, dtype=torch.float64)
    radii = torch.logspace(-2, 6, 80, dtype=torch.float64)
    points = directions[:, None, :] * radii[None, :, None]  # [200, 80, 3], rays out from the centre
    z = contract(points, kind)
    norm = z.norm(dim=-1) if kind == "sphere" else z.abs().amax(-1)
    assert (norm < 2).all()
    assert (norm[:, 1:] > norm[:, :-1]).all(), "distance from the centre must grow along every ray"
    back = uncontract(z, kind)
    near = points.norm(dim=-1) < 1e4  # farther out, float64 cannot tell 2 - 1/|y| from 2
    assert torch.allclose(back[near], points[near], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["sphere", "cube"])
def test_contract_gradient_is_continuous_at_the_unit_boundary(kind):
    u = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)  # |u|_2 = 1 and |u|_inf = 0.8
    u = u / (u.norm() if kind == "sphere" else u.abs().max())
    jac = [torch.autograd.functional.jacobian(lambda y: contract(y[None], kind)[0], u * s) for s in (1 - 1e-7, 1 + 1e-7)]
    assert torch.allclose(jac[0], jac[1], atol=1e-5)


def test_ndc_rays_hand_cases():
    # Reference camera at the origin looking down +z, focal = half the width: NDC x = x / z.
    w2c = torch.eye(3, 4)
    intrinsics = (2.0, 2.0, 2.0, 2.0, 4, 4)
    o, d = ndc_rays(torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]) / torch.tensor([[1.0], [math.sqrt(2)]]), w2c, intrinsics, near=1.0)
    assert torch.allclose(o, torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, -1.0]]), atol=1e-6)  # on the near plane
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), atol=1e-6)  # rays through the centre stay put
    # A point at depth z maps to z' = 1 - 2 near / z: depth 2 -> 0, depth 4 -> 0.5.
    pts = world_to_ndc(torch.tensor([[0.0, 0.0, 2.0], [2.0, -1.0, 4.0]]), w2c, intrinsics, near=1.0)
    assert torch.allclose(pts, torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.25, 0.5]]), atol=1e-6)


def test_ndc_rays_pass_through_the_ndc_image_of_their_world_points():
    g = torch.Generator().manual_seed(1)
    c2w = torch.eye(3, 4)[None].repeat(5, 1, 1)
    c2w[:, :, 3] = torch.randn(5, 3, generator=g) * 0.1
    w2c = mean_camera_w2c(c2w)
    intrinsics = (400.0, 380.0, 250.0, 190.0, 504, 378)
    rays_o = torch.randn(64, 3, generator=g) * 0.1
    rays_d = torch.randn(64, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 1.0])
    rays_d = rays_d / rays_d.norm(dim=-1, keepdim=True)
    o, d = ndc_rays(rays_o, rays_d, w2c, intrinsics, near=0.5)
    s = torch.linspace(1.0, 50.0, 20)
    world = rays_o[:, None] + s[None, :, None] * rays_d[:, None]  # beyond the near plane
    ndc = world_to_ndc(world.reshape(-1, 3), w2c, intrinsics, near=0.5).reshape(64, 20, 3)
    t = ((ndc - o[:, None]) * d[:, None]).sum(-1)  # position along the NDC ray
    assert torch.allclose(o[:, None] + t[..., None] * d[:, None], ndc, atol=1e-4), "NDC images of a world ray lie on its NDC ray"
    assert (t[:, 1:] > t[:, :-1]).all(), "farther along the world ray is farther along the NDC ray"
    assert (ndc[..., 2] < 1).all() and torch.allclose(o[:, 2], torch.full((64,), -1.0), atol=1e-5)


def test_ndc_box_holds_the_training_frustums():
    w2c = torch.eye(3, 4)
    intrinsics = (2.0, 2.0, 2.0, 2.0, 4, 4)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])
    box = ndc_box((torch.zeros(2, 3), corners / corners.norm(dim=-1, keepdim=True)), w2c, intrinsics, near=1.0, pad=0.0)
    assert box == pytest.approx((-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), abs=1e-5)


def test_space_round_trips_through_json():
    space = SceneSpace(rays="ndc", ndc_w2c=torch.eye(3, 4), ndc_intrinsics=(1.0, 2.0, 3.0, 4.0, 5, 6), ndc_near=0.3)
    again = SceneSpace.from_json(space.to_json())
    assert again.rays == "ndc" and again.ndc_intrinsics == space.ndc_intrinsics and again.ndc_near == 0.3
    assert torch.equal(again.ndc_w2c, space.ndc_w2c)
    box = SceneSpace(contraction="cube", box=(-1.0, -2.0, -3.0, 1.0, 2.0, 3.0))
    assert SceneSpace.from_json(box.to_json()).box == box.box
    assert SceneSpace.from_json(None).rays == "world"


class _Spy(torch.nn.Module):
    """A field that records where it was queried; a constant density inside ``|x| < 2``."""


    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def density(self, x):
        self.seen.append(x.detach())
        return torch.full((x.shape[0],), 5.0)

    def forward(self, x, d):
        self.seen.append(x.detach())
        return torch.full((x.shape[0], 3), 0.5), torch.full((x.shape[0],), 5.0)


def test_renderer_queries_the_field_at_contracted_positions():
    box = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    space = SceneSpace(contraction="sphere", box=(-0.5, -0.5, -0.5, 0.5, 0.5, 0.5))
    cfg = RenderConfig(grid_resolution=16, early_stop_eps=0.0)
    renderer = SceneRenderer(box, 0.0, 100.0, cfg, levels=4, cone_angle=0.01, space=space)
    renderer.estimator.binaries.fill_(True)
    field = _Spy()
    rays_o = torch.tensor([[-7.5, 0.3, 0.2], [0.0, 0.0, -7.9]])
    rays_d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    renderer.render(field, rays_o, rays_d)
    seen = torch.cat(field.seen)
    assert seen.norm(dim=-1).max() < 2.0
    assert seen.norm(dim=-1).max() > 1.5, "the outer levels (|x| up to 8 = 16 box half-widths) reach far into the contracted shell"
    world = uncontract(seen.double(), "sphere") * 0.5  # back to world units (box half-width 0.5, centre 0)
    assert world.abs().max() <= 8.0 + 1e-3  # inside the outermost level (base box x 2^3)
