"""The live viewer: ``nfplug train --viewer`` and ``nfplug view RUN``, in the browser through viser.

viser serves the page (its web client ships inside the wheel) and reports each browser's camera;
nfplug renders that camera on a thread of its own and sends the frame back as the page's
background image.

- **Cameras.** viser's camera is OpenCV-style like nfplug's (x right, y down, z forward):
  ``wxyz`` is the rotation R and ``position`` the t of ``P_world = R p_camera + t``, with a vertical
  field of view and the canvas's aspect. :func:`viewer_camera` turns that into a
  :class:`~nfplug.data.cameras.Cameras`; :func:`camera_pose` is its inverse for the training cameras
  drawn as frustums.
- **Frames.** A frame is rendered at the resolution the measured rays/s allow in about
  :data:`FRAME_SECONDS` while the camera moves (in one piece, always shown), then sharper once it
  stops (:data:`LEVELS`); a sharper render whose camera moves on is abandoned between chunks.
- **Training.** The trainer takes :attr:`Viewer.lock` around each step and the renderer takes it
  around each chunk, so a frame never sees a half-updated field. While training runs, rendering
  may use at most ``share`` of the wall time (after a render of t seconds the thread waits
  ``t (1 - share) / share``); with nobody looking it costs nothing.
- **Scenes and images.** A scene is rendered from the browser's camera; an image run is shown
  as a picture in the 3D view (orbit and zoom move around it), re-rendered as it trains.
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import socket
import threading
import time
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from nfplug.data.cameras import Cameras, generate_rays, pixel_centres
from nfplug.errors import NfplugError

FRAME_SECONDS = 0.2
"""A frame's target time while the camera moves."""
LEVELS = (1.0, 4.0, 16.0)
"""Frame budgets as multiples of :data:`FRAME_SECONDS`: coarse while moving, then two sharper
frames once the camera has stopped (each capped at the canvas's own size)."""
REFRESH_SECONDS = 2.0
"""While training, a still camera's view is re-rendered this often (the field changes)."""
CHUNK_SECONDS = 0.05
"""Rays per chunk are sized to take about this long: how fast a moved camera abandons a render."""
MAX_SIDE = 1280
"""Frames are at most this many pixels a side."""


# ------------------------------------------------------------------------------------- cameras


def camera_pose(c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """An OpenCV camera-to-world ``[3, 4]`` -> viser's ``(wxyz [4], position [3])``."""
    import viser.transforms as tf

    c2w = np.asarray(c2w, dtype=np.float64)
    return tf.SO3.from_matrix(c2w[:, :3]).wxyz, c2w[:, 3].copy()


def viewer_camera(wxyz: np.ndarray, position: np.ndarray, fov_y: float, width: int, height: int) -> Cameras:
    """viser's camera (``wxyz``, ``position``, vertical field of view in radians) seen at
    ``width x height`` pixels -> one nfplug camera (square pixels, principal point at the centre)."""
    import viser.transforms as tf

    rotation = tf.SO3(np.asarray(wxyz, dtype=np.float64)).as_matrix()
    c2w = np.concatenate([rotation, np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1)
    focal = 0.5 * height / math.tan(0.5 * fov_y)
    K = np.array([[focal, 0.0, 0.5 * width], [0.0, focal, 0.5 * height], [0.0, 0.0, 1.0]])
    return Cameras(torch.tensor(c2w, dtype=torch.float32)[None], torch.tensor(K, dtype=torch.float32)[None], width=int(width), height=int(height))


def vertical_fov(cameras: Cameras, index: int) -> float:
    """Camera ``index``'s vertical field of view in radians."""
    return 2.0 * math.atan(0.5 * cameras.height / float(cameras.K[index, 1, 1]))


def frame_size(rays: float, aspect: float, max_width: int, max_height: int) -> Tuple[int, int]:
    """The largest ``(width, height)`` of aspect ``aspect`` with about ``rays`` pixels, at most the
    canvas (``max_width x max_height``) and :data:`MAX_SIDE`, at least 8 pixels a side."""
    height = math.sqrt(max(rays, 64.0) / max(aspect, 1e-3))
    scale = min(1.0, max_height / height, max_width / (height * aspect), MAX_SIDE / height, MAX_SIDE / (height * aspect))
    height *= scale
    return max(8, int(round(height * aspect))), max(8, int(round(height)))


def check_port(host: str, port: int, option: str = "--port") -> None:
    """One line if ``host:port`` cannot be served (a port in use, a host not of this machine)."""
    if not 0 <= port <= 65535:
        raise NfplugError(f"{option}: {port} is not a port (0 to 65535; 0 picks a free one)")
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NfplugError(f"{option.replace('port', 'host')}: cannot resolve '{host}' ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise NfplugError(f"{option}: port {port} on {host} is in use by another program; pick another with {option} N (or 0 for any free port)") from None
            if e.errno == errno.EACCES:
                raise NfplugError(f"{option}: port {port} needs administrator rights; use a port above 1023") from None
            raise NfplugError(f"{option.replace('port', 'host')}: cannot listen on {host}:{port} ({e.strerror})") from None


# ------------------------------------------------------------------------------------ frames


def render_frame(
    task: Any, field: Callable[[], Any], cameras: Cameras, *, chunk: int = 1 << 14, lock: Any = None, abandon: Callable[[], bool] = lambda: False
) -> Tuple[Optional[torch.Tensor], int, float]:
    """Render one viewer camera of a scene task on its evaluation background, ``chunk`` rays at a
    time, each under ``lock`` with ``field()`` (the field as it is now); -> (``rgb [H, W, 3]`` in
    [0, 1], or None if ``abandon()`` said so between chunks; the rays rendered; the seconds spent
    rendering them, not waiting for the lock)."""
    cams = cameras.to(task.device)
    h, w = cams.height, cams.width
    pixel_xy = pixel_centres(h, w, task.device)
    rays_o, rays_d = generate_rays(cams, torch.zeros(len(pixel_xy), dtype=torch.long, device=task.device), pixel_xy)
    colors = []
    busy = 0.0
    for i in range(0, len(rays_o), chunk):
        if abandon():
            return None, i, busy
        with lock if lock is not None else contextlib.nullcontext(), torch.no_grad():
            start = time.perf_counter()
            d = rays_d[i : i + chunk]
            colors.append(task.renderer.render(field(), rays_o[i : i + chunk], d, task.eval_background(d)).colors)
            busy += time.perf_counter() - start
    return torch.cat(colors).reshape(h, w, 3).clamp(0, 1), len(rays_o), busy




@dataclass
class RateMeter:
    """Rays per second the viewer renders, from its own frames (an exponential average)."""

    rays_per_s: float = 20_000.0
    measured: bool = False

    def record(self, rays: int, seconds: float) -> None:
        if rays < 256 or seconds <= 0:
            return
        rate = rays / seconds
        self.rays_per_s = rate if not self.measured else 0.5 * self.rays_per_s + 0.5 * rate
        self.measured = True


@dataclass
class ClientView:
    """What has been shown to one browser: its camera's timestamp, the level of detail reached, and when."""

    camera_stamp: float = -1.0
    level: int = -1
    version: int = -1
    shown_at: float = 0.0


@dataclass
class TrainingStatus:
    step: int = 0
    max_steps: int = 0
    loss: float = float("nan")
    psnr: float = float("nan")
    rays_per_s: float = 0.0
    elapsed: float = 0.0
    steps: List[int] = dataclass_field(default_factory=list)
    psnrs: List[float] = dataclass_field(default_factory=list)
    losses: List[float] = dataclass_field(default_factory=list)
    finished: bool = False


class Viewer:
    """A viser server showing ``field`` through ``task`` (a scene or an image task).

    Args:
        task, field: what to show (``field`` may change while training; take :attr:`lock`).
        host, port: where to serve (``port`` 0: any free port).
        training: True under ``nfplug train --viewer``: status, loss plot and a pause button.
        share: while training runs, the largest share of wall time spent rendering.
        n_parts: a streamable field's parts (a slider picks how many are decoded), or 1.
        title: shown at the top of the panel.
    """

    def __init__(
        self, task: Any, field: Any, *, host: str = "127.0.0.1", port: int = 7007, training: bool = False, share: float = 0.5,
        n_parts: int = 1, title: str = "nfplug",
    ) -> None:
        import viser

        check_port(host, port, "--viewer-port" if training else "--port")
        self.task, self.field, self.training, self.share = task, field, training, share
        self.lock = threading.RLock()
        self.version = 0  # bumped by every training step
        self.status = TrainingStatus()
        self.rate = RateMeter()
        self.paused = threading.Event()
        self.shown = 0  # frames sent to browsers
        self.busy_seconds = 0.0  # time spent rendering (holding the lock), abandoned frames included
        self.started = time.monotonic()
        self._views: Dict[int, ClientView] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._image_shown = (-1, -1)  # image runs: (version, parts) of the picture in the scene
        self._image_at = 0.0  # and when it was rendered
        with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own banner; nfplug prints one line
            self.server = viser.ViserServer(host=host, port=port, verbose=False)
        if port and self.server.get_port() != port:  # taken between the check and the start
            self.server.stop()
            raise NfplugError(f"{'--viewer-port' if training else '--port'}: port {port} is in use by another program")
        self.host, self.port = host, self.server.get_port()
        self._build_gui(title, n_parts)
        if task.name == "scene":
            self._add_training_cameras()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(lambda client: self._views.pop(client.client_id, None))
        self._thread = threading.Thread(target=self._render_loop, name="nfplug-viewer", daemon=True)
        self._thread.start()
        self._panel = threading.Thread(target=self._panel_loop, name="nfplug-viewer-panel", daemon=True)
        self._panel.start()

    # -------------------------------------------------------------- public
    @property
    def url(self) -> str:
        host = socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def describe(self) -> str:
        local = f"http://localhost:{self.port}"
        return (
            f"viewer at {self.url} (over SSH: ssh -L {self.port}:localhost:{self.port} USER@THIS_MACHINE, then open {local})"
        )

    def report(self, step: int, max_steps: int, loss: float, psnr: float, rays_per_s: float, elapsed: float) -> None:
        """The trainer's numbers after a step (cheap: the panel is refreshed by the render thread)."""
        s = self.status
        s.step, s.max_steps, s.loss, s.psnr, s.rays_per_s, s.elapsed = step, max_steps, loss, psnr, rays_per_s, elapsed
        if step % 10 == 0 or step == 1:
            s.steps.append(step)
            s.psnrs.append(psnr)
            s.losses.append(loss)
        self.version += 1

    def wait_while_paused(self, stop_requested: Callable[[], bool]) -> None:
        """Block the trainer while the pause button is down (a stop request ends the wait)."""
        while self.paused.is_set() and not stop_requested() and not self._stop.is_set():
            time.sleep(0.05)

    def finish(self) -> None:
        self.status.finished = True
        self.paused.clear()

    def summary(self) -> str:
        """What the viewer cost: frames shown, and its rendering time against the time it was up."""
        up = time.monotonic() - self.started
        return f"{self.shown} frame(s) shown, {self.busy_seconds:.1f} s of rendering in {up:.1f} s ({100 * self.busy_seconds / max(up, 1e-9):.0f}%)"

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._panel.join(timeout=5)
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()

    # ----------------------------------------------------------------- GUI
    def _build_gui(self, title: str, n_parts: int) -> None:
        gui = self.server.gui
        self._status_md = gui.add_markdown(f"**{title}**")
        self._frame_md = gui.add_markdown("frame: waiting for a browser")
        self._parts = None
        if n_parts > 1:
            self._parts = gui.add_slider("parts decoded", min=1, max=n_parts, step=1, initial_value=n_parts)
            self._parts.on_update(lambda _: self._invalidate())
        self._pause = None
        self._plot = None
        if self.training:
            self._pause = gui.add_button("Pause training", icon=None)
            self._pause.on_click(lambda _: self._toggle_pause())

    def _toggle_pause(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
            self._pause.label = "Pause training"
        else:
            self.paused.set()
            self._pause.label = "Resume training"

    def _panel_loop(self) -> None:
        """The panel's status and plot, twice a second, on a thread of their own (frames can take seconds)."""
        while not self._stop.wait(0.5):
            try:
                self._update_panel()
            except Exception:  # noqa: BLE001 - a browser gone mid-update; the next round retries
                pass

    def _update_panel(self) -> None:
        if self.training:
            s = self.status
            state = "finished" if s.finished else ("paused" if self.paused.is_set() else "training")
            eta = ""
            if s.step and s.max_steps > s.step and not s.finished:
                eta = f", ETA {(s.max_steps - s.step) * s.elapsed / s.step:.0f} s"
            self._status_md.content = (
                f"**{state}**: step {s.step:,} of {s.max_steps:,}{eta}  \n"
                f"loss {s.loss:.5f}, PSNR {s.psnr:.2f} dB, {s.rays_per_s:,.0f} rays/s"
            )
            if len(s.steps) >= 2:
                data = tuple(np.asarray(v, dtype=np.float64) for v in (s.steps, s.psnrs, s.losses))
                if self._plot is None:
                    self._plot = self.server.gui.add_uplot(
                        data=data,
                        series=(
                            {"label": "step"},
                            {"label": "PSNR (dB)", "stroke": "blue", "width": 2, "scale": "psnr"},
                            {"label": "loss", "stroke": "red", "width": 1, "scale": "loss"},
                        ),
                        scales={"x": {"time": False}, "psnr": {"auto": True}, "loss": {"distr": 3}},
                        axes=({}, {"scale": "psnr"}, {"scale": "loss", "side": 1}),
                        title="training (every 10 steps)", aspect=1.6,
                    )
                else:
                    self._plot.data = data

    # ------------------------------------------------------------- cameras
    def _add_training_cameras(self) -> None:
        split = self.task.split("train") if "train" in self.task.splits() else None
        if split is None:
            return
        cams = split.cameras
        n = len(cams)
        c2w = cams.c2w.cpu().numpy()
        centres = c2w[:, :, 3]
        extent = float(np.linalg.norm(centres.max(0) - centres.min(0))) or 1.0
        up = -c2w[:, :, 1].mean(0)  # OpenCV y points down in the image
        self._up = up / (np.linalg.norm(up) or 1.0)
        self.server.scene.set_up_direction(tuple(self._up))
        shown = np.unique(np.linspace(0, n - 1, min(n, 200)).round().astype(int))
        for i in shown:
            wxyz, position = camera_pose(c2w[i])
            thumb = None
            if split.images is not None:
                image = split.images[i][..., :3].cpu().numpy()
                step = max(1, image.shape[0] // 48)
                thumb = (np.clip(image[::step, ::step], 0, 1) * 255).astype(np.uint8)
            self.server.scene.add_camera_frustum(
                f"/training cameras/{i:04d}", fov=vertical_fov(cams, int(i)), aspect=cams.width / cams.height, scale=0.02 * extent,
                wxyz=wxyz, position=position, image=thumb, color=(40, 90, 200),
            )
        self._first_camera = (c2w[0], vertical_fov(cams, 0))

    def _on_connect(self, client: Any) -> None:
        self._views[client.client_id] = ClientView()
        if self.task.name == "scene" and getattr(self, "_first_camera", None) is not None:
            c2w, fov = self._first_camera
            centre = np.asarray(self.task.aabb, dtype=np.float64).reshape(2, 3).mean(0)
            forward = c2w[:, 2]
            distance = max(float((centre - c2w[:, 3]) @ forward), 1e-3)
            eye = c2w[:, 3] + 0.25 * distance * (self._up - forward)  # behind and above the first training camera: its frustum out of the way
            with client.atomic():
                client.camera.up_direction = tuple(self._up)
                client.camera.position = tuple(eye)
                client.camera.look_at = tuple(c2w[:, 3] + distance * forward)
                client.camera.fov = fov
        elif self.task.name == "image":
            with client.atomic():
                client.camera.up_direction = (0.0, 1.0, 0.0)
                client.camera.position = (0.0, 0.0, 3.0)
                client.camera.look_at = (0.0, 0.0, 0.0)
                client.camera.fov = math.radians(50)

        async def moved(_: Any) -> None:  # async: run on viser's event loop, not handed to a thread per message
            self._wake.set()

        client.camera.on_update(moved)
        self._wake.set()

    def _invalidate(self) -> None:
        for view in self._views.values():
            view.level = -1
        self._image_shown = (-1, -1)
        self._wake.set()

    # -------------------------------------------------------------- render
    def _decoded(self) -> Any:
        from nfplug.api import decoding

        k = int(self._parts.value) if self._parts is not None else None
        return decoding(self.field, k)

    def _throttle(self, seconds: float) -> None:
        """While training runs, keep rendering within ``share`` of the wall time."""
        if self.training and not self.status.finished and not self.paused.is_set() and self.share < 1.0:
            self._stop.wait(seconds * (1.0 - self.share) / self.share)

    def _render_loop(self) -> None:
        while not self._stop.is_set():
            try:
                did = self._render_image_run() if self.task.name == "image" else self._render_next_scene_frame()
            except Exception as e:  # never take training down with the viewer
                self._frame_md.content = f"frame: render failed: {type(e).__name__}: {e}"
                did = None
            if did is None:
                self._wake.wait(0.1)
                self._wake.clear()
            else:
                self._throttle(did)

    def _render_next_scene_frame(self) -> Optional[float]:
        """Render one frame for the browser that most needs one; -> seconds spent, or None if none did."""
        now = time.monotonic()
        for client_id, client in list(self.server.get_clients().items()):
            view = self._views.get(client_id)
            if view is None:
                continue
            camera = client.camera
            try:
                stamp = camera.update_timestamp
            except AssertionError:  # no camera message yet
                continue
            moved = stamp != view.camera_stamp
            stale = self.training and self.version != view.version and now - view.shown_at >= REFRESH_SECONDS
            training = self.training and not self.status.finished and not self.paused.is_set()
            top = 1 if training else len(LEVELS) - 1  # the sharpest frame waits for a pause
            if moved:
                level = 0
            elif view.level < top and now - view.shown_at > 0.15:
                level = view.level + 1
            elif stale:
                level = 1
            else:
                continue
            return self._render_scene(client, view, stamp, level)
        return None

    def _render_scene(self, client: Any, view: ClientView, stamp: float, level: int) -> float:
        camera = client.camera
        width, height = frame_size(self.rate.rays_per_s * FRAME_SECONDS * LEVELS[level], camera.aspect, camera.image_width, camera.image_height)
        cams = viewer_camera(camera.wxyz, camera.position, camera.fov, width, height)
        start = time.perf_counter()
        version = self.version
        if level == 0:  # the coarse frame while moving: one chunk, always finished, so a moving camera sees frames
            chunk, abandon = width * height, (lambda: self._stop.is_set())
        else:  # sharper frames: abandoned as soon as the camera moves on
            chunk = max(1024, int(self.rate.rays_per_s * CHUNK_SECONDS))
            abandon = lambda: camera.update_timestamp != stamp or self._stop.is_set()  # noqa: E731
        rgb, rendered, busy = render_frame(self.task, self._decoded, cams, chunk=chunk, lock=self.lock, abandon=abandon)
        seconds = time.perf_counter() - start
        self.busy_seconds += busy
        self.rate.record(rendered, busy)  # the renderer's own speed: waits for a training step are not its
        if rgb is None:
            view.camera_stamp = -1.0
            return busy
        client.scene.set_background_image((rgb * 255).to(torch.uint8).cpu().numpy(), format="jpeg", jpeg_quality=90)
        self.shown += 1
        view.camera_stamp, view.level, view.version, view.shown_at = stamp, level, version, time.monotonic()
        self._frame_md.content = f"frame: {width}x{height} in {seconds:.2f} s ({self.rate.rays_per_s:,.0f} rays/s)"
        return busy

    def _render_image_run(self) -> Optional[float]:
        """Image runs: the picture in the 3D scene, re-rendered when the field or parts change."""
        parts = int(self._parts.value) if self._parts is not None else 0
        now = time.monotonic()
        shown_version, shown_parts = self._image_shown
        if (shown_version, shown_parts) != (-1, -1) and shown_parts == parts:
            if not self.training or self.version == shown_version or now - self._image_at < REFRESH_SECONDS:
                return None
        task = self.task
        longest = max(task.height, task.width)
        scale = min(1.0, 512 / longest)
        version = self.version
        start = time.perf_counter()
        with self.lock, torch.no_grad():
            rgb = task.render_image(self._decoded(), scale)
        seconds = time.perf_counter() - start
        self.busy_seconds += seconds
        self.shown += 1
        image = (rgb.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        aspect = task.width / task.height
        self.server.scene.add_image("/image", image, render_width=2.0 * aspect, render_height=2.0, format="jpeg", jpeg_quality=90, wxyz=(0.0, 1.0, 0.0, 0.0))
        self._image_shown, self._image_at = (version, parts), now
        self._frame_md.content = f"image: {image.shape[1]}x{image.shape[0]} in {seconds:.2f} s"
        return seconds
