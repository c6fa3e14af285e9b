"""Reading image files: 8- and 16-bit PNG, JPEG and what else OpenCV reads, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nfplug.errors import NfplugError


def read_image_file(path: Path) -> np.ndarray:
    """``[H, W, C]`` float32 in ``[0, 1]``, channels in RGB(A) order, ``C`` in {1, 3, 4}.

    Raises NfplugError naming the file if it is missing, empty, corrupt or of an
    unsupported pixel type.
    """
    path = Path(path)
    if not path.is_file():
        raise NfplugError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise NfplugError(f"{path}: empty file")
    try:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise NfplugError(" ".join(f"{path}: cannot read image: {e}".split())) from None
    if raw is None:
        raise NfplugError(f"{path}: corrupt or unreadable image")
    if raw.dtype == np.uint8:
        image = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        image = raw.astype(np.float32) / 65535.0
    else:
        raise NfplugError(f"{path}: unsupported pixel type {raw.dtype} (expected 8 or 16 bit)")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 3:
        image = image[:, :, ::-1]
    elif channels == 4:
        image = image[:, :, [2, 1, 0, 3]]
    elif channels != 1:
        raise NfplugError(f"{path}: unsupported number of channels {channels} (expected 1, 3 or 4)")
    return np.ascontiguousarray(image)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` RGBA -> ``[H, W, 3]`` RGB on ``background [3]`` (straight alpha)."""
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
    return rgb * alpha + background * (1.0 - alpha)
