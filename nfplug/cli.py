"""The ``nfplug`` command: ``train``, ``eval``, ``render``, ``plugins``.

``train`` first picks the plugin names out of argv (``--field NAME``, ``--sampler NAME``,
``--init NAME``), loads only those plugins, then lets tyro parse everything else
against a config type built from the chosen plugins' own ``Config`` dataclasses, so
``nfplug train --field ngp --help`` shows ngp's options as ``--field.OPTION``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

from nfplug.errors import NfplugError

USAGE = """usage: nfplug COMMAND [OPTIONS]

commands:
  train         train a field on a scene folder (any dataset format), an image file, or the built-in demo
  train-ray     the same training as several processes on a Ray cluster (pip install nfplug[ray])
  eval          evaluate a trained run on held-out views, write metrics.json
  render        render a trained run along a camera path (PNG frames, depth maps, mp4)
  view          open a trained run in the browser viewer (orbit, pan, zoom; over SSH with port forwarding)
  export        write a trained run: a stream (one chunk per part), a coloured mesh or a point cloud (PLY)
  process-data  turn photos or a video into a posed scene (structure from motion with COLMAP)
  plugins       list the installed fields, inits, samplers and dataset formats
  new-plugin    write a ready plugin package to fill in (a field, init, sampler or dataset format)

'nfplug COMMAND --help' shows a command's options. Several processes or machines:
'torchrun --nproc-per-node N -m nfplug train ...' (data-parallel; see the README, Scale out)."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    commands = {"train": cmd_train, "train-ray": cmd_train_ray, "eval": cmd_eval, "render": cmd_render, "export": cmd_export, "view": cmd_view, "plugins": cmd_plugins, "process-data": cmd_process_data, "new-plugin": cmd_new_plugin}
    if command not in commands:
        print(f"nfplug: error: unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return commands[command](rest)
    except NfplugError as e:
        print(f"nfplug: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None or e.errno not in _USER_ERRNOS:
            raise
        from nfplug.training.rundir import os_reason  # a file we write that nothing above named

        print(f"nfplug: error: {e.filename}: {os_reason(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nfplug: interrupted", file=sys.stderr)
        return 130


_USER_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR})
"""OSErrors a user can cause and fix (read-only, permissions, full disk, a file as a folder)."""


def parse_with_tyro(cls, args: List[str], prog: str, description: str, default=None):
    """``tyro.cli`` whose parse errors become one-line NfplugErrors instead of a boxed report.

    ``--help`` still prints tyro's full help (to stdout) and exits 0.
    """
    import contextlib
    import io

    import tyro

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            config = tyro.cli(cls, args=args, prog=prog, description=description, default=default)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise NfplugError(f"{_tyro_error_message(captured.getvalue())} (see '{prog} --help')") from None
    sys.stderr.write(captured.getvalue())  # warnings, if any
    return config


def _tyro_error_message(text: str) -> str:
    """The message of tyro's error report: the lines after its title, up to the next rule.

    The report is a box drawn with Unicode or ASCII rules depending on the terminal.
    """
    lines = [line.strip().strip("│|").strip() for line in text.splitlines()]
    is_rule = lambda line: bool(line) and set(line) <= set("─-╭╮╰╯+ ")  # noqa: E731
    content = [line for line in lines if line]
    message = []
    for line in content[1:]:  # content[0] is the title ("Value error", ...)
        if is_rule(line):
            if message:
                break
            continue
        message.append(line)
    return " ".join(message) or "invalid arguments"


# ---------------------------------------------------------------------- train


def _option_value(argv: List[str], i: int) -> Tuple[str, int]:
    """The value of the option at ``argv[i]`` (``--KEY=VALUE`` or ``--KEY VALUE``) and the index after it."""
    key, eq, inline = argv[i].partition("=")
    if eq:
        return inline, i + 1
    if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        return argv[i + 1], i + 2
    raise NfplugError(f"{key}: expects a value")


def split_train_argv(argv: List[str]) -> Tuple[Dict[str, str], Optional[str], List[str]]:
    """Take ``--field/--sampler/--init NAME`` and ``--resume DIR`` out of argv.

    ``--data PATH`` becomes ``--data.path PATH``. Returns (chosen names, resume dir, rest).
    """
    from nfplug.config import PLUGIN_SLOTS

    names: Dict[str, str] = {}
    resume: Optional[str] = None
    rest: List[str] = []
    i = 0
    while i < len(argv):
        key = argv[i].partition("=")[0]
        slot = key[2:] if key.startswith("--") else None
        if slot not in PLUGIN_SLOTS and slot not in ("resume", "data"):
            rest.append(argv[i])
            i += 1
            continue
        value, i = _option_value(argv, i)
        if slot == "resume":
            resume = value
        elif slot == "data":
            rest += ["--data.path", value]
        else:
            names[slot] = value
    return names, resume, rest


def _data_kind(rest: List[str]) -> str:
    """What the ``--data`` options left by :func:`split_train_argv` point at
    (:func:`nfplug.training.tasks.data_kind`), read before tyro parses them."""
    from nfplug.training.tasks import data_kind

    values = {"--data.path": "demo", "--data.task": "auto", "--data.format": "auto"}
    i = 0
    while i < len(rest):
        key = rest[i].partition("=")[0]
        if key in values:
            values[key], i = _option_value(rest, i)
        else:
            i += 1
    return data_kind(values["--data.path"], values["--data.task"], values["--data.format"])


def take_option(argv: List[str], name: str) -> Tuple[Optional[str], List[str]]:
    """Take ``--NAME VALUE`` (or ``--NAME=VALUE``) out of argv; -> (value or None, the rest)."""
    value: Optional[str] = None
    rest: List[str] = []
    i = 0
    while i < len(argv):
        if argv[i].partition("=")[0] == f"--{name}":
            value, i = _option_value(argv, i)
        else:
            rest.append(argv[i])
            i += 1
    return value, rest


def parse_train_args(argv: List[str]):
    """-> (config, plugin names, resume dir or None). Exits via tyro on --help."""
    from nfplug import registry
    from nfplug.config import PLUGIN_KINDS, PLUGIN_SLOTS, default_plugins, validate_options
    from nfplug.training.run import config_from_run, config_type, plugin_classes

    chosen, resume, rest = split_train_argv(argv)
    default = None
    if resume is not None:
        default, names = config_from_run(Path(resume))
        for slot, name in chosen.items():
            if name != names[slot]:
                raise NfplugError(f"--{slot}: cannot change the {slot} of a run when resuming ({resume} uses '{names[slot]}')")
    else:
        # Only the sampler's default depends on the data: look at the data only when it is needed.
        defaults = default_plugins(_data_kind(rest) if "sampler" not in chosen else "unused")
        names = {slot: chosen.get(slot, defaults[slot]) for slot in PLUGIN_SLOTS}
    classes = plugin_classes(names)
    cls = config_type(names, classes)
    lines = ["Train a neural field. Plugins (pick them before their options):"]
    for slot in PLUGIN_SLOTS:
        valid = registry.names(PLUGIN_KINDS[slot])
        lines.append(f"  --{slot + ' NAME':<13} one of: {', '.join(valid)} (now: {names[slot]})")
    lines.append(f"  {'--resume DIR':<15} continue a run from its last checkpoint")
    lines.append(f"  {'--checkpoint PATH':<15} with --resume: continue from this checkpoint instead (later ones are set aside)")
    lines += VIEWER_HELP
    config = parse_with_tyro(cls, rest, "nfplug train", "\n".join(lines), default=default)
    validate_options(config)  # every option's range, and each plugin Config's validate()
    return config, names, resume


@dataclass(frozen=True)
class ViewerOptions:
    """``nfplug train --viewer [--viewer-host H] [--viewer-port P] [--viewer-share S]`` (not stored in
    the run's config: a resumed run shows the viewer only if asked again)."""

    host: str = "127.0.0.1"
    port: int = 7007
    share: float = 0.5


VIEWER_HELP = [
    f"  {'--viewer':<15} watch training live in the browser (prints the URL; orbit, pan, zoom, pause)",
    f"  {'--viewer-host H':<15} address to serve on (default 127.0.0.1; 0.0.0.0 for other machines)",
    f"  {'--viewer-port P':<15} port (default 7007; 0: any free port)",
    f"  {'--viewer-share S':<15} largest share of wall time the viewer may render while training (default 0.5)",
]


def take_viewer_options(argv: List[str], check_port: bool = True) -> Tuple[Optional[ViewerOptions], List[str]]:
    """Take the viewer's options out of argv; -> (options if --viewer was given, the rest)."""
    host, argv = take_option(argv, "viewer-host")
    port, argv = take_option(argv, "viewer-port")
    share, argv = take_option(argv, "viewer-share")
    enabled = "--viewer" in argv
    argv = [a for a in argv if a != "--viewer"]
    given = [name for name, value in (("--viewer-host", host), ("--viewer-port", port), ("--viewer-share", share)) if value is not None]
    if not enabled:
        if given:
            raise NfplugError(f"{given[0]}: only with --viewer")
        return None, argv
    options = ViewerOptions()
    if host is not None:
        if not host:
            raise NfplugError("--viewer-host: must not be empty")
        options = dataclasses.replace(options, host=host)
    if port is not None:
        try:
            options = dataclasses.replace(options, port=int(port))
        except ValueError:
            raise NfplugError(f"--viewer-port: expected a port number, got '{port}'") from None
    if share is not None:
        try:
            value = float(share)
        except ValueError:
            raise NfplugError(f"--viewer-share: expected a number in (0, 1], got '{share}'") from None
        if not (0.0 < value <= 1.0):
            raise NfplugError(f"--viewer-share: must be in (0, 1], got {share}")
        options = dataclasses.replace(options, share=value)
    if check_port:  # before any data is read
        from nfplug.viewer import check_port as check

        check(options.host, options.port, "--viewer-port")
    return options, argv


def cmd_train_ray(argv: List[str]) -> int:
    from nfplug.ray_train import cmd_train_ray as run

    return run(argv)


def cmd_train(argv: List[str]) -> int:
    from nfplug.distributed import launched_by_torchrun

    if "--viewer" in argv and launched_by_torchrun():
        raise NfplugError("--viewer: not with torchrun (the viewer watches one process; open the run later with nfplug view RUN)")
    checkpoint, argv = take_option(argv, "checkpoint")
    viewer, argv = take_viewer_options(argv, check_port=not any(a in ("-h", "--help") for a in argv))
    config, names, resume = parse_train_args(argv)
    if checkpoint is not None and resume is None:
        raise NfplugError("--checkpoint: only with --resume RUN (it picks the checkpoint to continue from)")
    from nfplug.training.trainer import train

    result = train(config, names, resume_dir=Path(resume) if resume else None, checkpoint=Path(checkpoint) if checkpoint else None, viewer=viewer)
    return 130 if result.interrupted else 0


# ----------------------------------------------------------------- eval/render


@dataclass(frozen=True)
class MetricsOptions:
    lpips_weights: Optional[str] = None
    """LPIPS: the backbone's ImageNet weights (torchvision's alexnet-owt-7be5be79.pth, or
    vgg16-397923af.pth with --metrics.lpips-net vgg). Default: the torch-hub cache, where
    torchvision's download leaves them; without them LPIPS is skipped (nothing is downloaded)."""
    lpips_net: Literal["alex", "vgg"] = "alex"
    """LPIPS backbone: alex (the LPIPS authors' default) or vgg."""


@dataclass(frozen=True)
class EvalArgs:
    run: str
    """Run directory written by nfplug train."""
    split: Optional[str] = None
    """Split to evaluate (scenes: val, test, train; images: full, heldout, train). Default: the
    run's held-out split."""
    device: str = "auto"
    """'cpu', 'cuda' or 'auto'."""
    parts: Optional[int] = None
    """Streamable fields: decode from the first k parts only (default: all, and every k is
    reported with its parameter count)."""
    checkpoint: Optional[str] = None
    """Checkpoint to evaluate (a path, or a file name in RUN/checkpoints; default: the latest usable)."""
    metrics: MetricsOptions = MetricsOptions()
    """Metric options (LPIPS's weights)."""


def cmd_eval(argv: List[str]) -> int:
    from nfplug.api import decoding, field_macs_per_sample, field_n_parts
    from nfplug.lpips import load_lpips
    from nfplug.training.evaluation import evaluate_parts, evaluate_views, write_metrics
    from nfplug.training.run import load_run
    from nfplug.training.rundir import check_writable

    args = parse_with_tyro(EvalArgs, _positional_run(argv), "nfplug eval", "Evaluate a run on held-out views.")
    run = load_run(Path(args.run), args.device, args.checkpoint)
    split = _checked_split(run.task, args.split or run.task.eval_split_name)
    check_writable(run.run_dir)  # before evaluating: metrics.json goes there
    lpips, skipped = load_lpips(args.metrics.lpips_net, args.metrics.lpips_weights, run.task.device)
    if skipped:
        print(f"nfplug: {skipped}")
    metrics = evaluate_views(run.task, decoding(run.field, args.parts), split, lpips=lpips)
    metrics["step"] = run.step
    macs = field_macs_per_sample(run.field)
    if macs is not None:
        metrics["macs_per_sample"] = macs
    if args.parts is None and field_n_parts(run.field) > 1:
        metrics["parts"] = evaluate_parts(run.task, run.field, split)
    else:
        metrics["decoded_parts"] = args.parts or field_n_parts(run.field)
    path = write_metrics(run.run_dir, metrics, "metrics.json" if args.parts is None else f"metrics_parts{args.parts}.json")
    lpips_text = f", LPIPS ({args.metrics.lpips_net}) {metrics['mean']['lpips']:.4f}" if "lpips" in metrics["mean"] else ""
    if lpips is not None and not lpips_text:
        print("nfplug: LPIPS skipped: it needs RGB views at least 32 pixels a side")
    print(f"{split}: PSNR {metrics['mean']['psnr']:.2f} dB, SSIM {metrics['mean']['ssim']:.4f}{lpips_text} over {len(metrics['views'])} views (step {run.step}) -> {path}")
    for row in metrics.get("parts", []):
        print(f"  first {row['parts']} part(s): {row['params']:>9,} parameters, PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}")
    if macs is not None:
        print(f"inference cost: {macs:,.0f} multiply-accumulates per sample")
    return 0


@dataclass(frozen=True)
class RenderArgs:
    run: str
    """Run directory written by nfplug train."""
    path: Literal["orbit", "spiral", "interpolate", "val", "test", "train"] = "orbit"
    """Scenes: camera path. orbit: a circle around the scene's centre (for a capture that does not
    go all around, a sweep over the arc its photos cover); spiral: LLFF's spiral about the mean
    camera (used instead of orbit for forward-facing captures unless --path is given); interpolate:
    a smooth path through the training cameras in capture order; val, test, train: that split's
    cameras."""
    scale: float = 1.0
    """Render at this multiple of the training resolution (images: e.g. 2 for 2x super-resolution)."""
    frames: int = 60
    """Frames of the orbit, spiral or interpolate path (a split renders each of its cameras)."""
    fps: int = 30
    """Video frame rate."""
    output: Optional[str] = None
    """Output folder (default: RUN/renders/PATH)."""
    device: str = "auto"
    """'cpu', 'cuda' or 'auto'."""
    parts: Optional[int] = None
    """Streamable fields: decode from the first k parts only (default: all)."""
    checkpoint: Optional[str] = None
    """Checkpoint to render (a path, or a file name in RUN/checkpoints; default: the latest usable)."""


def cmd_render(argv: List[str]) -> int:
    from nfplug.api import decoding
    from nfplug.rendering.paths import SPLIT_PATHS, default_path
    from nfplug.rendering.video import render_path, write_image
    from nfplug.training.run import load_run

    args = parse_with_tyro(RenderArgs, _positional_run(argv), "nfplug render", "Render a run along a camera path.")
    if args.frames < 1:
        raise NfplugError("--frames: must be at least 1")
    if not args.scale > 0:
        raise NfplugError("--scale: must be positive")
    run = load_run(Path(args.run), args.device, args.checkpoint)
    field = decoding(run.field, args.parts)
    suffix = f"_parts{args.parts}" if args.parts else ""
    if run.task.name == "image":
        out = Path(args.output) if args.output else run.run_dir / "renders"
        written = write_image(run.task.render_image(field, args.scale), out / f"reconstruction_x{args.scale:g}{suffix}.png")
        print(f"rendered {written}")
        return 0
    path = args.path
    path_given = any(arg == "--path" or arg.startswith("--path=") for arg in argv)
    if not path_given and default_path(run.task.layout) != path:
        path = default_path(run.task.layout)
        print(f"{run.task.layout} scene: rendering --path {path} (pass --path orbit for a circle around it)")
    if path in SPLIT_PATHS:
        _checked_split(run.task, path)
    out = Path(args.output) if args.output else run.run_dir / "renders" / f"{path}{suffix}"
    written = render_path(run.task, field, path, out, frames=args.frames, fps=args.fps, scale=args.scale)
    print(f"rendered {written.n_frames} frames ({written.seconds_per_frame:.2f} s each) -> {out} (video: {written.video})")
    return 0


@dataclass(frozen=True)
class ExportArgs:
    run: str
    """Run directory written by nfplug train."""
    format: Literal["stream", "mesh", "points"] = "stream"
    """stream: one chunk per part of the field, in order, plus manifest.json. mesh: a coloured
    triangle mesh (OUT/mesh.ply, marching cubes on the density). points: a coloured point cloud
    sampled from that surface (OUT/points.ply). Meshes and points open in MeshLab or Blender."""
    output: Optional[str] = None
    """Output folder (default: RUN/export-FORMAT)."""
    checkpoint: Optional[str] = None
    """Checkpoint to export (a path, or a file name in RUN/checkpoints; default: the latest usable)."""
    resolution: int = 256
    """mesh, points: lattice points a side over the scene box for marching cubes (memory grows as
    its cube: about 20 bytes a point, checked before any work)."""
    threshold: Optional[float] = None
    """mesh, points: the density of the surface (default: ln 2 / the marching step, where one
    step of the renderer is half opaque)."""
    points: int = 1_000_000
    """points: how many points to sample from the surface."""
    parts: Optional[int] = None
    """mesh, points of a streamable field: decode from the first k parts only (default: all)."""


def cmd_export(argv: List[str]) -> int:
    from nfplug.training.run import load_run

    args = parse_with_tyro(ExportArgs, _positional_run(argv), "nfplug export", "Export a trained run.")
    if args.points < 1:
        raise NfplugError(f"--points: must be at least 1 (got {args.points})")
    if args.threshold is not None and not (math.isfinite(args.threshold) and args.threshold > 0):
        raise NfplugError(f"--threshold: must be a positive density (got {args.threshold})")
    if args.format != "stream":
        from nfplug.mesh import check_resolution

        check_resolution(args.resolution)
    elif args.parts is not None:
        raise NfplugError("--parts: only for --format mesh or points (a stream holds every part)")
    run = load_run(Path(args.run), "cpu", args.checkpoint)
    out = Path(args.output) if args.output else run.run_dir / f"export-{args.format}"
    if args.format != "stream":
        from nfplug.api import decoding
        from nfplug.mesh import export_surface

        summary = export_surface(run, decoding(run.field, args.parts), args.format, out, args.resolution, args.threshold, args.points)
        what = f"{summary['vertices']:,} vertices, {summary['faces']:,} triangles" if args.format == "mesh" else f"{summary['points']:,} points"
        print(f"exported {what} (density threshold {summary['threshold']:.3g}, {args.resolution}^3 lattice) -> {summary['path']}")
        return 0
    from nfplug.export import export_stream

    manifest = export_stream(run, out)
    chunks = json.loads(manifest.read_text())["chunks"]
    for chunk in chunks:
        print(f"  {chunk['file']}: part {chunk['part']}, {chunk['params']:,} parameters, {chunk['bytes']:,} bytes")
    print(f"exported {len(chunks)} chunk(s) -> {out} (manifest: {manifest.name})")
    return 0


@dataclass(frozen=True)
class ViewArgs:
    run: str
    """Run directory written by nfplug train (a scene or an image run)."""
    host: str = "127.0.0.1"
    """Address to serve on (0.0.0.0: reachable from other machines; over SSH, forward the port instead)."""
    port: int = 7007
    """Port to serve on (0: any free port)."""
    device: str = "auto"
    """'cpu', 'cuda' or 'auto'."""
    checkpoint: Optional[str] = None
    """Checkpoint to show (a path, or a file name in RUN/checkpoints; default: the latest usable)."""
    seconds: Optional[float] = None
    """Stop serving after this many seconds (default: until Ctrl-C)."""


def cmd_view(argv: List[str]) -> int:
    import time

    from nfplug.api import field_n_parts
    from nfplug.training.run import load_run
    from nfplug.viewer import Viewer, check_port

    args = parse_with_tyro(ViewArgs, _positional_run(argv), "nfplug view", "Open a trained run in the browser viewer.")
    if not args.host:
        raise NfplugError("--host: must not be empty")
    if args.seconds is not None and not (math.isfinite(args.seconds) and args.seconds > 0):
        raise NfplugError(f"--seconds: must be a positive number, got {args.seconds}")
    check_port(args.host, args.port)  # before loading the run
    run = load_run(Path(args.run), args.device, args.checkpoint)
    viewer = Viewer(run.task, run.field, host=args.host, port=args.port, n_parts=field_n_parts(run.field), title=f"nfplug view: {run.run_dir.name} (step {run.step:,})")
    print(f"nfplug: {viewer.describe()}; Ctrl-C stops it", flush=True)
    try:
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("nfplug: viewer stopped")
    finally:
        viewer.close()
    return 0


def cmd_process_data(argv: List[str]) -> int:
    from nfplug.process_data import cmd_process_data as run

    return run(argv)


def _positional_run(argv: List[str]) -> List[str]:
    """Accept ``nfplug eval RUN ...`` as well as ``--run RUN``."""
    if argv and not argv[0].startswith("-"):
        return ["--run", argv[0], *argv[1:]]
    return argv


def _checked_split(task, split: str) -> str:
    splits = task.splits()
    if split not in splits:
        raise NfplugError(f"--split: '{split}' is not in {task.root} (available: {', '.join(splits)})")
    return split


# ---------------------------------------------------------------------- plugins


def cmd_plugins(argv: List[str]) -> int:
    from nfplug import registry
    from nfplug.config import PLUGIN_KINDS

    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: nfplug plugins\n\nList every registered field, init, sampler and dataset format, and whether it loads.\n"
            "Plugins come from installed packages' entry points and, for development, from the environment variable\n"
            "NFPLUG_PLUGINS='KIND:NAME=MODULE:CLASS;...' (MODULE a module importable from the current folder, or a .py file)."
        )
        return 0
    rows = [("NAME", "KIND", "DISTRIBUTION", "STATUS", "DESCRIPTION")]
    problems = []
    for slot, kind in [*PLUGIN_KINDS.items(), ("dataset", "datasets")]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            statuses = registry.load_all(kind)
        for s in statuses:
            status = "FAILED" if not s.loaded else ("API MISMATCH" if s.api_warning else "ok")
            rows.append((s.entry.name, slot, s.entry.distribution, status, s.description if s.loaded else "(see below)"))
            if not s.loaded:
                problems.append(s.error)
            elif s.api_warning:
                problems.append(s.api_warning)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return 0


def cmd_new_plugin(argv: List[str]) -> int:
    from nfplug.scaffold import KINDS, names_for, new_plugin

    usage = f"usage: nfplug new-plugin KIND NAME [--output DIR] (KIND: {', '.join(KINDS)})"
    if any(a in ("-h", "--help") for a in argv):
        print(
            "usage: nfplug new-plugin KIND NAME [--output DIR]\n\n"
            "Write a ready plugin package to fill in: pyproject.toml with the entry point, a documented class that\n"
            "works, a test that runs nfplug.testing's conformance checks on it, and a README.\n\n"
            f"  KIND          {', '.join(KINDS)}\n"
            "  NAME          the name users will type (--sampler NAME), e.g. my-sampler\n"
            "  --output DIR  the folder to create (default: ./nfplug-NAME)"
        )
        return 0
    output, rest = take_option(argv, "output")
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise NfplugError(f"{unknown[0]}: unknown option; {usage}")
    if len(rest) != 2:
        raise NfplugError(f"expected KIND and NAME, got {len(rest)} argument(s); {usage}")
    kind, name = rest
    if output == "":
        raise NfplugError("--output: must not be empty")
    folder = new_plugin(kind, name, Path(output or f"nfplug-{name}"))
    names = names_for(kind, name)
    print(f"wrote {folder}/: {names['package']}/{kind}.py (the {kind} '{name}', class {names['cls']}), tests/, pyproject.toml, README.md")
    print(f"next: cd {folder} && pip install -e . && pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
