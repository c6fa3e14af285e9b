"""Turning photos or a video into a posed scene: ``nfplug process-data INPUT --output SCENE``.

The equivalent of nerfstudio's ``ns-process-data images|video`` and instant-ngp's
``colmap2nerf.py``, on the CPU: structure from motion with pycolmap (SIFT features, exhaustive
or sequential matching, incremental mapping), keeping the largest reconstruction. ``SCENE``
holds::

    images/            the photos, copied byte for byte (or the video's frames, frame_00001.png ...)
    images_2/ _4/ _8/  the same files shrunk to (W // N, H // N) (area interpolation), for training
                       at lower resolution without resizing every time
    colmap/database.db COLMAP's features and matches (to re-run mapping without re-matching)
    colmap/pairs.txt   sequential matching only: the image pairs it matched
    colmap/sparse/0/   the COLMAP model (binary cameras.bin, images.bin, points3D.bin, ...)
    sparse_pc.ply      the sparse points (binary PLY: float x y z, uchar red green blue)
    transforms.json    nerfstudio's format (below)
    process_data.json  the options, and per stage: counts and seconds

``transforms.json``::

    {"camera_model": "OPENCV",                 # nerfstudio's name for every perspective model
     "fl_x", "fl_y", "cx", "cy": pixels, "w", "h": image size,
     "k1", "k2", "p1", "p2": OpenCV distortion  # only the model's own: OPENCV all four,
                                               # RADIAL k1 k2, SIMPLE_RADIAL k1, pinholes none
     "frames": [{"file_path": "images/NAME", "transform_matrix": 4x4 camera-to-world,
                 "colmap_im_id": ID}, ...],     # registered images only, sorted by name
     "ply_file_path": "sparse_pc.ply",
     "registered": N, "given": M, "mean_reprojection_error": pixels}

``transform_matrix`` is in the OpenGL convention (camera x right, y up, looking down -z): the
inverse of COLMAP's world-to-camera ``[R|t]`` with its y and z columns negated. The world frame
is COLMAP's own (no axis swap, no centring, no scaling: the loader normalises); the PLY's
points are in the same frame. When the images have several cameras (``--no-single-camera``),
the intrinsics (and ``w``, ``h``, distortion) are on each frame instead of at the top level.

Everything is written into a sibling folder ``SCENE.tmp-<pid>`` that is renamed to ``SCENE``
at the end, so a failure or Ctrl-C never leaves a half-written scene (the temporary folder is
removed). Every problem with the input raises :class:`~nfplug.errors.NfplugError` with one line
naming the file or option.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from nfplug.errors import NfplugError, fail

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
DOWNSCALES = (2, 4, 8)
BLUR_MARGIN = 1.25
"""A video window's centre frame gives way to a neighbour only if the neighbour is this much
sharper (variance of the Laplacian): noise alone must not make the frame spacing irregular."""
MIN_IMAGE_SIDE = 32
SEQUENTIAL_OVERLAP = 10
"""Sequential matching pairs each image with the next 10 and with those 16, 32, ... 512 ahead."""
LOOP_KEYFRAMES = 20
"""... and every pair of this many evenly spaced images, so that a video returning to where it
started (an orbit) is matched across the loop: COLMAP's loop detection needs a vocabulary tree."""
STAGES = 4


@dataclass(frozen=True)
class ProcessDataArgs:
    input: str
    """A folder of photos (JPEG/PNG, not recursive) or a video file."""
    output: str
    """The scene folder to write (images/, images_2,4,8/, colmap/, sparse_pc.ply, transforms.json)."""
    num_frames: int = 120
    """Video: frames to keep, sampled evenly (the sharpest of up to 3 candidates in each stretch)."""
    matching: Literal["auto", "exhaustive", "sequential"] = "auto"
    """Which image pairs to match: every pair, or sequential: each image with its neighbours in name
    order (the next 10 and those 16, 32, ... ahead) and every pair of 20 evenly spaced keyframes
    (to close loops). auto: exhaustive for photos, sequential for a video."""
    camera_model: Literal["OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"] = "OPENCV"
    """COLMAP camera model (SIMPLE_RADIAL is more stable with few images)."""
    single_camera: bool = True
    """All images come from one camera with one focal length (one phone, no zoom)."""
    max_image_size: int = 1600
    """Features are found on images shrunk to at most this many pixels on the long side."""
    overwrite: bool = False
    """Replace an existing, non-empty output folder."""
    min_registered: float = 0.5
    """Fail if structure from motion places fewer than this fraction of the images."""
    seed: int = 0
    """Seed of COLMAP's random sampling (RANSAC, mapping)."""
    verbose: bool = False
    """Show COLMAP's own log."""


DESCRIPTION = (
    "nfplug process-data INPUT --output SCENE [OPTIONS]: turn a folder of photos or a video (INPUT) into a posed "
    "scene, by structure from motion with COLMAP on the CPU. Writes SCENE/transforms.json (nerfstudio format), "
    "images/ (and images_2,4,8/), colmap/ and sparse_pc.ply; then run: nfplug train --data SCENE"
)


def cmd_process_data(argv: List[str]) -> int:
    """``nfplug process-data INPUT --output SCENE [options]``."""
    from nfplug.cli import parse_with_tyro

    if argv and not argv[0].startswith("-"):
        argv = ["--input", argv[0], *argv[1:]]
    args = parse_with_tyro(ProcessDataArgs, argv, "nfplug process-data", DESCRIPTION)
    process_data(args)
    return 0


def validate_args(args: ProcessDataArgs) -> None:
    """Each option's range, as a one-line ``--option: what is wrong``."""
    if args.num_frames < 3:
        raise NfplugError(f"--num-frames: must be at least 3 (structure from motion needs 3 views), got {args.num_frames}")
    if args.max_image_size < 100:
        raise NfplugError(f"--max-image-size: must be at least 100 pixels, got {args.max_image_size}")
    if not 0.0 <= args.min_registered <= 1.0:
        raise NfplugError(f"--min-registered: must be a fraction between 0 and 1, got {args.min_registered:g}")
    if args.seed < 0:
        raise NfplugError(f"--seed: must be 0 or more, got {args.seed}")
    if not args.output.strip():
        raise NfplugError("--output: must name a folder")


@dataclass
class Report:
    """What each stage did, for the progress lines and the summary."""

    given: List[str] = field(default_factory=list)
    """The image names given to structure from motion."""
    seconds: Dict[str, float] = field(default_factory=dict)
    pairs: int = 0
    verified: int = 0
    models: int = 0


def process_data(args: ProcessDataArgs) -> Path:
    """Run every stage into ``SCENE.tmp-<pid>``, rename it to ``SCENE``; -> the scene folder."""
    validate_args(args)
    source = Path(args.input)
    is_video = _input_kind(source) == "video"
    scene = Path(args.output)
    _check_output(scene, source, args.overwrite)
    matching = args.matching if args.matching != "auto" else ("sequential" if is_video else "exhaustive")
    tmp = scene.parent / f"{scene.name}.tmp-{os.getpid()}"
    from nfplug.training.rundir import make_folder

    shutil.rmtree(tmp, ignore_errors=True)
    make_folder(tmp / "images")
    try:
        report = Report()
        with _stage(report, "frames" if is_video else "images"):
            report.given = extract_video_frames(source, tmp, args.num_frames) if is_video else copy_images(source, tmp, args.single_camera)
        model = run_sfm(tmp, report, args, matching)
        _check_registration(model, report, args, is_video, matching)
        with _stage(report, "writing"):
            write_transforms(model, tmp / "transforms.json", len(report.given))
            write_ply(model, tmp / "sparse_pc.ply")
        write_report(model, report, args, matching, tmp / "process_data.json")
        _replace(tmp, scene)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _print_summary(model, report, scene)
    return scene


# ------------------------------------------------------------------ input, output


def _input_kind(source: Path) -> str:
    """"photos" (a folder) or "video" (a file); one line if it is neither."""
    if source.is_dir():
        return "photos"
    if not source.exists():
        raise NfplugError(f"{source}: no such file or folder (INPUT is a folder of photos or a video file)")
    if not source.is_file():
        raise NfplugError(f"{source}: neither a folder of photos nor a video file")
    if source.suffix.lower() in PHOTO_SUFFIXES:
        raise NfplugError(f"{source}: is a single photo; give the folder of photos (at least 3) or a video")
    return "video"


def _check_output(scene: Path, source: Path, overwrite: bool) -> None:
    resolved, inside = scene.resolve(), source.resolve()
    if resolved == inside or resolved in inside.parents:
        raise NfplugError(f"--output: {scene} holds the input {source}; choose another folder")
    if scene.exists() and not scene.is_dir():
        raise NfplugError(f"--output: {scene} exists and is not a folder")
    if scene.is_dir() and any(scene.iterdir()) and not overwrite:
        raise NfplugError(f"--output: {scene} exists and is not empty (add --overwrite to replace it)")


def _replace(tmp: Path, scene: Path) -> None:
    """Rename ``tmp`` to ``scene``; an existing ``scene`` is removed only once the new one is in place."""
    old = scene.parent / f"{scene.name}.old-{os.getpid()}"
    if scene.exists():
        os.replace(scene, old)
    try:
        os.replace(tmp, scene)
    except BaseException:
        if old.exists():
            os.replace(old, scene)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ stage 1: images


def copy_images(folder: Path, scene: Path, single_camera: bool) -> List[str]:
    """Copy every JPEG/PNG of ``folder`` (not recursive, hidden files skipped) into
    ``scene/images`` unchanged and write its downscaled versions; -> the names, sorted."""
    from nfplug.data.images import read_image_file

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
    if len(files) < 3:
        raise NfplugError(f"{folder}: {len(files)} JPEG/PNG photo(s); structure from motion needs at least 3")

    def copy_one(path: Path) -> Tuple[int, int]:
        image = read_image_file(path)  # one line naming the file if it is truncated or corrupt
        _check_size(path, image.shape[1], image.shape[0])
        shutil.copyfile(path, scene / "images" / path.name)
        write_downscaled(np.round(image * 255).astype(np.uint8), path.name, scene)
        return image.shape[1], image.shape[0]

    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=2)  # OpenCV decodes and resizes without the GIL
    try:
        sizes = list(tqdm(pool.map(copy_one, files), total=len(files), desc=f"[1/{STAGES}] images", unit="image", disable=None, leave=False))
    finally:
        pool.shutdown(cancel_futures=True)  # after an error or Ctrl-C, copy no more
    if single_camera:
        for path, size in zip(files, sizes):
            if size != sizes[0]:
                raise NfplugError(
                    f"{path}: photo is {size[0]}x{size[1]} but {files[0].name} is {sizes[0][0]}x{sizes[0][1]}; "
                    f"one camera means one size (add --no-single-camera for photos from several cameras)"
                )
    size = f"{sizes[0][0]}x{sizes[0][1]}" if len(set(sizes)) == 1 else f"{len(set(sizes))} sizes"
    print(f"[1/{STAGES}] images: {len(files):,} copied, {size} ({time.perf_counter() - start:.1f} s)")
    return [p.name for p in files]


def _check_size(path: Path, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise NfplugError(f"{path}: image is {width}x{height}; structure from motion needs at least {MIN_IMAGE_SIDE} pixels a side")


def write_downscaled(image: np.ndarray, name: str, scene: Path) -> None:
    """``image [H, W, C]`` uint8 RGB(A) -> ``scene/images_N/name`` at ``(W // N, H // N)``, N = 2, 4, 8."""
    height, width = image.shape[:2]
    bgr = image[..., [2, 1, 0, 3][: image.shape[2]]] if image.shape[2] >= 3 else image
    for factor in DOWNSCALES:
        folder = scene / f"images_{factor}"
        folder.mkdir(exist_ok=True)
        small = cv2.resize(bgr, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
        if not cv2.imwrite(str(folder / name), small):
            raise NfplugError(f"{folder / name}: cannot write the downscaled image")


def extract_video_frames(video: Path, scene: Path, num_frames: int) -> List[str]:
    """Write ``num_frames`` frames sampled evenly from ``video`` as ``scene/images/frame_00001.png``
    ... (and downscaled); -> the names.

    The video is cut into ``num_frames`` equal stretches; in each, up to 3 candidates (at 1/6,
    1/2 and 5/6 of it) are read and the centre one is kept unless a neighbour is
    :data:`BLUR_MARGIN` times sharper by the variance of its Laplacian (motion blur lowers it).
    """
    import imageio.v2 as imageio

    start = time.perf_counter()
    try:
        reader = imageio.get_reader(video, "ffmpeg")
        total = reader.count_frames()
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        reason = str(e).strip().splitlines()[-1].rpartition(": ")[2] if str(e).strip() else type(e).__name__
        raise NfplugError(f"{video}: not a video ffmpeg can read ({reason.rstrip('.')})") from None
    windows = _frame_windows(total, num_frames)
    if len(windows) < 3:
        raise NfplugError(f"{video}: has {total} frame(s); structure from motion needs at least 3")
    window_of = {index: k for k, window in enumerate(windows) for index in window}
    names: List[str] = []
    candidates: Dict[int, Tuple[float, np.ndarray]] = {}
    blurry, k, last = 0, 0, max(window_of)
    with reader, tqdm(total=last + 1, desc=f"[1/{STAGES}] frames", unit="frame", disable=None, leave=False) as bar:
        try:
            for index, frame in enumerate(reader):
                bar.update(1)
                if index in window_of:
                    candidates[index] = (_sharpness(frame), frame)
                    k = window_of[index]
                    if index == max(windows[k]):
                        blurry += _write_sharpest(windows[k], candidates, scene, names)
                        candidates.clear()
                if index >= last:
                    break
        except (OSError, RuntimeError) as e:
            raise fail(f"{video}: cannot decode frame {bar.n}: {e}") from None
    if candidates:  # the video ended before its header's frame count
        blurry += _write_sharpest(windows[k], candidates, scene, names)
    skipped = f" ({blurry} blurry skipped)" if blurry else ""
    print(f"[1/{STAGES}] frames: {len(names):,} of {total:,} sampled{skipped} ({time.perf_counter() - start:.1f} s)")
    return names


def _frame_windows(total: int, n: int) -> List[Tuple[int, ...]]:
    """The candidate frame indices of each of ``n`` equal stretches of ``total`` frames, centre first."""
    if total <= n:
        return [(i,) for i in range(total)]
    windows = []
    for k in range(n):
        first, length = k * total // n, (k + 1) * total // n - k * total // n
        centre = first + length // 2
        others = {first + length // 6, first + 5 * length // 6} - {centre}
        windows.append((centre, *sorted(others)))
    return windows


def _sharpness(frame: np.ndarray) -> float:
    gray = cv2.cvtColor(frame[..., :3], cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def _write_sharpest(window: Tuple[int, ...], candidates: Dict[int, Tuple[float, np.ndarray]], scene: Path, names: List[str]) -> int:
    """Write the window's centre frame, or a neighbour :data:`BLUR_MARGIN` times sharper; -> 1 if a neighbour."""
    present = [i for i in window if i in candidates]
    if not present:
        return 0
    centre = present[0]
    best = max(present, key=lambda i: candidates[i][0])
    if candidates[best][0] < BLUR_MARGIN * candidates[centre][0]:
        best = centre
    frame = candidates[best][1][..., :3]
    name = f"frame_{len(names) + 1:05d}.png"
    if not cv2.imwrite(str(scene / "images" / name), np.ascontiguousarray(frame[..., ::-1])):
        raise NfplugError(f"{scene / 'images' / name}: cannot write the frame")
    write_downscaled(frame, name, scene)
    names.append(name)
    return int(best != centre)


# ------------------------------------------------------------------ stages 2-4: structure from motion


def run_sfm(scene: Path, report: Report, args: ProcessDataArgs, matching: str):
    """Features, matching and incremental mapping on ``scene/images`` into ``scene/colmap``;
    -> the largest reconstruction (``pycolmap.Reconstruction``) or None."""
    import pycolmap

    colmap = scene / "colmap"
    colmap.mkdir()
    with _colmap_log(args.verbose):
        pycolmap.set_random_seed(args.seed)
        with _stage(report, "features"):
            _extract_features(colmap / "database.db", scene / "images", report.given, args)
        per_image = _query(colmap / "database.db", "SELECT SUM(rows) FROM keypoints") / len(report.given)
        print(f"[2/{STAGES}] features: {len(report.given):,} images, {per_image:,.0f} keypoints per image ({report.seconds['features']:.1f} s)")
        with _stage(report, "matching"):
            _match_features(colmap, report.given, matching, args.seed)
        report.pairs = _query(colmap / "database.db", "SELECT COUNT(*) FROM two_view_geometries")
        report.verified = _query(colmap / "database.db", "SELECT COUNT(*) FROM two_view_geometries WHERE rows > 0")
        print(f"[3/{STAGES}] matching ({matching}): {report.pairs:,} pairs, {report.verified:,} verified ({report.seconds['matching']:.1f} s)")
        with _stage(report, "mapping"):
            model = _map(colmap, scene / "images", report, args.seed)
    registered = model.num_reg_images() if model is not None else 0
    extra = f", the largest of {report.models} models" if report.models > 1 else ""
    print(f"[4/{STAGES}] mapping: {registered:,} of {len(report.given):,} images registered{extra} ({report.seconds['mapping']:.1f} s)")
    return model


def _extract_features(database: Path, images: Path, names: List[str], args: ProcessDataArgs) -> None:
    """SIFT on the CPU, on images shrunk to ``--max-image-size``; one camera, or COLMAP's own choice."""
    import pycolmap

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = args.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu, extraction.num_threads, extraction.max_image_size = False, -1, args.max_image_size
    mode = pycolmap.CameraMode.SINGLE if args.single_camera else pycolmap.CameraMode.AUTO
    with _database_progress(database, "SELECT COUNT(*) FROM keypoints", len(names), f"[2/{STAGES}] features", "image"):
        pycolmap.extract_features(database, images, names, mode, reader, extraction, device=pycolmap.Device.cpu)


def _match_features(colmap: Path, names: List[str], matching: str, seed: int) -> None:
    """Match and geometrically verify every pair (exhaustive) or :func:`sequential_pairs`."""
    import pycolmap

    options = pycolmap.FeatureMatchingOptions()
    options.use_gpu, options.num_threads = False, -1
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = seed
    # Ctrl-C is noticed between blocks of pairs: small blocks (COLMAP's are 50 x 50 images) stop in a second.
    if matching == "exhaustive":
        total, match, pairing = len(names) * (len(names) - 1) // 2, pycolmap.match_exhaustive, pycolmap.ExhaustivePairingOptions()
        pairing.block_size = 10
    else:
        total, match, pairing = _write_pair_list(names, colmap / "pairs.txt"), pycolmap.match_image_pairs, pycolmap.ImportedPairingOptions()
        pairing.match_list_path, pairing.block_size = colmap / "pairs.txt", 100
    database = colmap / "database.db"
    with _database_progress(database, "SELECT COUNT(*) FROM two_view_geometries", total, f"[3/{STAGES}] matching", "pair"):
        match(database, options, pairing, verification, device=pycolmap.Device.cpu)


def _map(colmap: Path, images: Path, report: Report, seed: int):
    """Incremental mapping; writes the largest model alone to ``colmap/sparse/0``; -> it or None."""
    import pycolmap

    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = -1
    options.random_seed = options.mapper.random_seed = options.triangulation.random_seed = seed
    sparse = colmap / "sparse"
    sparse.mkdir()
    with tqdm(total=len(report.given), desc=f"[4/{STAGES}] mapping", unit="image", disable=None, leave=False) as bar:

        def registered(k: int) -> None:
            bar.update(min(k, bar.total - bar.n))  # a second model counts its images again

        models = pycolmap.incremental_mapping(
            colmap / "database.db", images, sparse, options,
            initial_image_pair_callback=lambda: registered(2), next_image_callback=lambda: registered(1),
        )
    shutil.rmtree(sparse)  # pycolmap wrote every model; keep only the largest, as sparse/0
    sparse.mkdir()
    report.models = len(models)
    if not models:
        return None
    model = max(models.values(), key=lambda m: m.num_reg_images())
    (sparse / "0").mkdir()
    model.write(sparse / "0")
    return model


def sequential_pairs(n: int, overlap: int = SEQUENTIAL_OVERLAP, keyframes: int = LOOP_KEYFRAMES) -> List[Tuple[int, int]]:
    """The pairs ``(i, j)``, ``i < j``, that sequential matching matches among ``n`` images in name order.

    COLMAP 3's sequential matcher (``j - i`` up to ``overlap``, or a power of two below
    ``2^overlap``; COLMAP 4's keeps only the powers of two when ``quadratic_overlap`` is on),
    plus every pair of ``keyframes`` evenly spaced images for loop closure.
    """
    pairs = set()
    for i in range(n):
        pairs.update((i, j) for j in range(i + 1, min(n, i + overlap + 1)))
        pairs.update((i, i + (1 << k)) for k in range(overlap) if i + (1 << k) < n)
    step = -(-n // keyframes)
    pairs.update((i, j) for i in range(0, n, step) for j in range(i + step, n, step))
    return sorted(pairs)


def _write_pair_list(names: List[str], path: Path) -> int:
    """COLMAP's match list (``NAME1 NAME2`` a line) of :func:`sequential_pairs`; -> the pair count."""
    spaced = next((name for name in names if len(name.split()) != 1), None)
    if spaced is not None:
        raise NfplugError(f"--matching sequential: COLMAP's pair list cannot hold a file name with spaces ({spaced!r}); rename it or use --matching exhaustive")
    pairs = sequential_pairs(len(names))
    path.write_text("".join(f"{names[i]} {names[j]}\n" for i, j in pairs), encoding="utf-8")
    return len(pairs)


@contextlib.contextmanager
def _colmap_log(verbose: bool) -> Iterator[None]:
    """COLMAP logs through glog: its INFO, WARNING and ERROR lines only with --verbose."""
    import pycolmap

    level = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = 0 if verbose else 3  # errors too: ours say what went wrong
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = level


@contextlib.contextmanager
def _stage(report: Report, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    report.seconds[name] = time.perf_counter() - start


def _query(database: Path, query: str) -> int:
    """A count from COLMAP's database (its schema: one row per image in ``keypoints``, per image
    pair in ``two_view_geometries``, with ``rows`` keypoints or inlier matches)."""
    connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True, timeout=0.1)
    try:
        return int(connection.execute(query).fetchone()[0] or 0)
    finally:
        connection.close()


@contextlib.contextmanager
def _database_progress(database: Path, query: str, total: int, desc: str, unit: str) -> Iterator[None]:
    """A progress bar fed by counting rows of COLMAP's database while a pycolmap call fills it.

    pycolmap has no progress callback for features and matching, but COLMAP commits each image's
    keypoints and each pair's geometry as it goes, and its database is in WAL mode, where a reader
    never blocks the writer. Only on a terminal (``disable=None``).
    """
    bar = tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(sqlite3.Error):  # not created yet, or busy: next time
                bar.update(_query(database, query) - bar.n)

    thread = threading.Thread(target=poll, daemon=True)
    if not bar.disable:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        bar.close()


def _check_registration(model, report: Report, args: ProcessDataArgs, is_video: bool, matching: str) -> None:
    given = len(report.given)
    registered = model.num_reg_images() if model is not None else 0
    if is_video:
        hint = "try more --num-frames, slower camera motion" + (
            ", --matching sequential" if matching != "sequential" else ", --matching exhaustive (slower, more robust for a few hundred frames)"
        )
    else:
        hint = "take more photos with more overlap between neighbours" + (", try --matching exhaustive" if matching != "exhaustive" else "")
    if args.camera_model != "SIMPLE_RADIAL" and given < 30:
        hint += ", or --camera-model SIMPLE_RADIAL for few images"
    if model is None:
        raise NfplugError(
            f"structure from motion found no reconstruction from the {given} images "
            f"({report.verified:,} of {report.pairs:,} image pairs matched reliably); {hint}"
        )
    if registered < args.min_registered * given:
        raise NfplugError(
            f"structure from motion registered only {registered} of {given} images ({registered / given:.0%}, "
            f"--min-registered {args.min_registered:g}); {hint}"
        )


# ------------------------------------------------------------------ outputs


_PARAMETERS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fl_x", "fl_y", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2"),
}
"""COLMAP's parameter order of each camera model, in transforms.json's names (f: one focal length)."""


def camera_intrinsics(camera) -> Dict[str, float]:
    """A ``pycolmap.Camera`` as transforms.json's ``fl_x fl_y cx cy w h`` and its distortion keys."""
    values = dict(zip(_PARAMETERS[camera.model.name], map(float, camera.params)))
    if "f" in values:
        values["fl_x"] = values["fl_y"] = values.pop("f")
    out = {key: values[key] for key in ("fl_x", "fl_y", "cx", "cy")}
    out.update(w=int(camera.width), h=int(camera.height))
    out.update({key: values[key] for key in ("k1", "k2", "p1", "p2") if key in values})
    return out


def opengl_camera_to_world(cam_from_world: np.ndarray) -> np.ndarray:
    """COLMAP's world-to-camera ``[3, 4]`` (OpenCV axes: x right, y down, looking down +z) ->
    ``[4, 4]`` camera-to-world in the OpenGL convention (y up, looking down -z)."""
    w2c = np.eye(4)
    w2c[:3] = cam_from_world
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1:3] *= -1
    return c2w


def write_transforms(model, path: Path, given: int) -> int:
    """``transforms.json`` for the registered images of ``model`` (see the module docstring); -> frames."""
    images = sorted((im for im in model.images.values() if im.has_pose), key=lambda im: im.name)
    camera_ids = {im.camera_id for im in images}
    meta: Dict[str, object] = {"camera_model": "OPENCV"}
    if len(camera_ids) == 1:
        meta.update(camera_intrinsics(model.cameras[camera_ids.pop()]))
    frames = []
    for im in images:
        frame = {"file_path": f"images/{im.name}", "transform_matrix": opengl_camera_to_world(im.cam_from_world().matrix()).tolist()}
        if "fl_x" not in meta:
            frame.update(camera_intrinsics(model.cameras[im.camera_id]))
        frame["colmap_im_id"] = int(im.image_id)
        frames.append(frame)
    meta["frames"] = frames
    meta["ply_file_path"] = "sparse_pc.ply"
    meta.update(registered=len(frames), given=given, mean_reprojection_error=float(model.compute_mean_reprojection_error()))
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return len(frames)


def write_ply(model, path: Path) -> None:
    """The sparse points as a binary PLY (float x y z, uchar red green blue), COLMAP's world frame."""
    model.export_PLY(path)


def write_report(model, report: Report, args: ProcessDataArgs, matching: str, path: Path) -> None:
    """``process_data.json``: the options, and what each stage did and took (for benchmarks and bug reports)."""
    registered = sorted(im.name for im in model.images.values() if im.has_pose)
    values = {
        "input": str(Path(args.input).resolve()),
        "matching": matching,
        "camera_model": args.camera_model,
        "given": len(report.given),
        "registered": len(registered),
        "not_registered": [name for name in report.given if name not in set(registered)],
        "pairs": report.pairs,
        "verified_pairs": report.verified,
        "points": int(model.num_points3D()),
        "mean_reprojection_error": float(model.compute_mean_reprojection_error()),
        "stage_seconds": dict(report.seconds),
    }
    path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")


def _print_summary(model, report: Report, scene: Path) -> None:
    registered = {im.name for im in model.images.values() if im.has_pose}
    missing = [name for name in report.given if name not in registered]
    line = f"registered {len(registered):,} of {len(report.given):,} images"
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        line += f" (not registered: {shown})"
    print(f"\n{line}")
    print(f"mean reprojection error {model.compute_mean_reprojection_error():.2f} px, {model.num_points3D():,} sparse points")
    times = ", ".join(f"{stage} {s:.1f} s" for stage, s in report.seconds.items())
    print(f"time: {times} (total {sum(report.seconds.values()):.1f} s)")
    print(f"scene: {scene} (transforms.json, images/ and images_2,4,8/, colmap/, sparse_pc.ply)")
    print(f"next: nfplug train --data {scene}")
