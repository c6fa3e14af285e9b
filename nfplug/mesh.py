"""Mesh and point-cloud export of a trained scene: ``nfplug export RUN --format mesh|points``.

The density is sampled on a ``resolution^3`` lattice over the scene box (the occupancy grid's
finest level), cells the occupancy grid holds empty count as empty, and marching cubes
(PyMCubes) extracts the surface where the density crosses ``threshold``. The lattice is padded
with empty space, so every surface is closed (watertight), also where the scene touches the box.
Vertex colours come from the field looking at each vertex from outside, along the inward normal
(the normal is the density's gradient). ``points`` samples the mesh's surface uniformly by area
and colours each point the same way. Both are written as binary PLY through trimesh, in the
run's scene frame: the canonical frame ``scene.json`` maps the capture's world into.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nfplug.api import Field
from nfplug.errors import NfplugError
from nfplug.training.rundir import check_writable, write_bytes_atomic

CHUNK = 1 << 17  # points per field call
BYTES_PER_VOXEL = 20
"""Peak memory per lattice point: the density (float32, 4 bytes), the padded copy marching cubes
reads (float64, 8), and the mesh. Measured on the demo scene with ``/usr/bin/time -v nfplug export
RUN --format mesh --resolution R`` above the 0.4 GB of R = 64: 14.4 bytes at R = 256, 15.6 at 512."""


@dataclass
class MeshResult:
    vertices: np.ndarray  # [V, 3] float32, scene frame
    faces: np.ndarray  # [F, 3] int64
    colors: np.ndarray  # [V, 3] uint8
    threshold: float
    box: tuple


def default_threshold(render_step: float) -> float:
    """The density at which one marching step of the renderer is half opaque: ``ln 2 / step``.

    Renders treat a sample of at least this density as mostly surface, so the mesh is where the
    renders show it, in any scene's units."""
    return math.log(2.0) / render_step


def available_memory() -> Optional[int]:
    """Bytes of memory available now (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_lattice_memory(resolution: int, available: Optional[int]) -> None:
    """One-line error before any work if the lattice of ``resolution^3`` cannot fit in 80% of the
    memory ``available`` now. Stricter than :func:`nfplug.config.check_memory`, which bounds an
    option by the machine's physical memory: the lattice is allocated at once, in this process."""
    needed = BYTES_PER_VOXEL * (resolution + 2) ** 3
    if available is None or needed <= 0.8 * available:
        return
    fits = int((0.8 * available / BYTES_PER_VOXEL) ** (1 / 3)) - 2
    raise NfplugError(
        f"--resolution {resolution}: needs about {needed / 2**30:.1f} GB of memory ({BYTES_PER_VOXEL} bytes a voxel), "
        f"{available / 2**30:.1f} GB available; use --resolution {max(fits, 1)} or less"
    )


def _scene_parts(task):
    if getattr(task, "name", None) != "scene":
        raise NfplugError("--format: mesh and points export a scene; this run trained an image (use 'nfplug render' for it)")
    space = task.renderer.space
    if space.rays != "world":
        raise NfplugError(
            "--format: mesh and points need a scene marched in world space; this forward-facing run marched NDC rays "
            "(train it with --render.rays world to export a mesh)"
        )
    return task.renderer, space


@torch.no_grad()
def sample_density(field: Field, task, resolution: int) -> tuple[np.ndarray, tuple]:
    """Density ``[R, R, R]`` at the lattice over the scene box (empty where the grid is), and the box."""
    renderer, space = _scene_parts(task)
    box = tuple(float(v) for v in task.aabb)
    lo = torch.tensor(box[:3], device=task.device)
    hi = torch.tensor(box[3:], device=task.device)
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=task.device) for i in range(3)]
    binaries = renderer.estimator.binaries[0]  # the finest level covers the box
    cells = torch.tensor(binaries.shape, device=task.device)
    out = np.empty((resolution, resolution, resolution), dtype=np.float32)
    yz = torch.stack(torch.meshgrid(axes[1], axes[2], indexing="ij"), dim=-1).reshape(-1, 2)
    slab = max(1, CHUNK // yz.shape[0])
    for i in range(0, resolution, slab):
        xs = axes[0][i : i + slab]
        x = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(len(xs), 1)], dim=-1)
        sigma = field.density(space.to_field(x))
        cell = ((x - lo) / (hi - lo) * cells).long().clamp_(min=torch.zeros_like(cells), max=cells - 1)
        sigma = torch.where(binaries[cell[:, 0], cell[:, 1], cell[:, 2]], sigma, torch.zeros_like(sigma))
        out[i : i + len(xs)] = sigma.reshape(len(xs), resolution, resolution).float().cpu().numpy()
    return out, box


def surface_colors(field: Field, task, points: np.ndarray) -> np.ndarray:
    """``[N, 3]`` uint8 colours of surface points, each seen from outside along its inward normal
    (the density's gradient points inward)."""
    _, space = _scene_parts(task)
    colors = []
    for i in range(0, len(points), CHUNK):
        x = torch.as_tensor(points[i : i + CHUNK], dtype=torch.float32, device=task.device).requires_grad_(True)
        with torch.enable_grad():
            sigma = field.density(space.to_field(x))
            (grad,) = torch.autograd.grad(sigma.sum(), x)
        d = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # inward: density grows inward
        d = torch.where(grad.norm(dim=-1, keepdim=True) > 0, d, torch.tensor([0.0, 0.0, -1.0], device=d.device))
        with torch.no_grad():
            extra = {"image_index": None} if getattr(field, "uses_appearance", False) else {}
            rgb, _ = field(space.to_field(x.detach()), d, **extra)
        colors.append((rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
    return np.concatenate(colors) if colors else np.zeros((0, 3), np.uint8)


def extract_mesh(field: Field, task, resolution: int, threshold: Optional[float] = None) -> MeshResult:
    """Marching cubes on the density lattice; vertices in the scene frame, coloured by the field."""
    import mcubes

    threshold = default_threshold(task.renderer.render_step_size) if threshold is None else float(threshold)
    density, box = sample_density(field, task, resolution)
    padded = np.pad(density, 1, mode="constant", constant_values=0.0).astype(np.float64)
    del density
    vertices, faces = mcubes.marching_cubes(padded, threshold)
    del padded
    lo, hi = np.array(box[:3]), np.array(box[3:])
    vertices = (lo + (vertices - 1.0) * (hi - lo) / (resolution - 1)).astype(np.float32)
    faces = faces.astype(np.int64)
    colors = surface_colors(field, task, vertices)
    return MeshResult(vertices, faces, colors, threshold, box)


def sample_surface(mesh: MeshResult, n: int, generator: np.random.Generator) -> np.ndarray:
    """``n`` points on the mesh, uniform by area: a triangle drawn by its area, then a uniform
    point in it (``sqrt`` on the first barycentric draw)."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
    face = generator.choice(len(tri), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(generator.random(n))[:, None], generator.random(n)[:, None]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    return ((1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c).astype(np.float32)


def write_mesh_ply(mesh: MeshResult, path: Path) -> None:
    import trimesh

    alpha = np.full((len(mesh.colors), 1), 255, np.uint8)
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=np.concatenate([mesh.colors, alpha], axis=1), process=False)
    write_bytes_atomic(path, trimesh.exchange.ply.export_ply(shape, encoding="binary"))


def write_points_ply(points: np.ndarray, colors: np.ndarray, path: Path) -> None:
    import trimesh

    alpha = np.full((len(colors), 1), 255, np.uint8)
    cloud = trimesh.PointCloud(points, colors=np.concatenate([colors, alpha], axis=1))
    write_bytes_atomic(path, trimesh.exchange.ply.export_ply(cloud, encoding="binary"))



def check_resolution(resolution: int) -> None:
    if resolution < 8:
        raise NfplugError(f"--resolution: must be at least 8 (got {resolution})")
    if resolution > 4096:
        raise NfplugError(f"--resolution: at most 4096 (got {resolution})")


def export_surface(run, field: Field, fmt: str, out: Path, resolution: int, threshold: Optional[float], n_points: int, seed: int = 0) -> dict:
    """``nfplug export --format mesh|points``: write ``out/mesh.ply`` or ``out/points.ply``; -> a summary."""
    check_resolution(resolution)
    _scene_parts(run.task)
    check_lattice_memory(resolution, available_memory())
    check_writable(out)  # creates it; one line if it cannot be written, before any work
    mesh = extract_mesh(field, run.task, resolution, threshold)
    if len(mesh.faces) == 0:
        raise NfplugError(
            f"--threshold {mesh.threshold:g}: no surface: the density never reaches it inside the scene box "
            f"(lower --threshold, or train the run longer)"
        )
    if fmt == "mesh":
        path = out / "mesh.ply"
        write_mesh_ply(mesh, path)
        return {"path": path, "vertices": len(mesh.vertices), "faces": len(mesh.faces), "threshold": mesh.threshold}
    points = sample_surface(mesh, n_points, np.random.default_rng(seed))
    path = out / "points.ply"
    write_points_ply(points, surface_colors(field, run.task, points), path)
    return {"path": path, "points": len(points), "threshold": mesh.threshold}

