"""Reading image files: 8- and 16-bit PNG, JPEG and what else OpenCV reads, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from nfplug.errors import NfplugError


def read_image_file(path: Path) -> np.ndarray:
    """``[H, W, C]`` float32 in ``[0, 1]``, channels in RGB(A) order, ``C`` in {1, 3, 4}.

    Raises NfplugError naming the file if it is missing, empty, truncated, corrupt or of an
    unsupported pixel type.
    """
    path = Path(path)
    if not path.is_file():
        raise NfplugError(f"{path}: image file not found")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NfplugError(" ".join(f"{path}: cannot read: {e}".split())) from None
    if not data:
        raise NfplugError(f"{path}: empty file")
    truncated = _truncation(data)
    if truncated:
        raise NfplugError(f"{path}: truncated or corrupt image ({truncated})")
    try:
        raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
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


def _truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file's bytes end too early, or None.

    OpenCV decodes a truncated JPEG with the missing part grey (it only logs "Premature end of
    JPEG file"), so the files' structure is walked here, up to the JPEG's end-of-image marker
    (FF D9) or the PNG's IEND chunk. Bytes after those are ignored, as decoders do (phones
    append videos to "motion photo" JPEGs).
    """
    if data.startswith(b"\xff\xd8") and not _jpeg_reaches_end_marker(data):
        return "the JPEG ends before its end-of-image marker FF D9"
    if data.startswith(b"\x89PNG\r\n\x1a\n") and not _png_reaches_iend(data):
        return "the PNG ends before its IEND chunk"
    return None


def _jpeg_reaches_end_marker(data: bytes) -> bool:
    """Walk a JPEG's segments and entropy-coded scans from SOI to EOI."""
    i = 2
    while i + 1 < len(data):
        if data[i] != 0xFF:  # stray bytes between segments: skipped to the next marker, as libjpeg does
            i = data.find(b"\xff", i)
            if i == -1:
                return False
            continue
        marker = data[i + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte; markers without a length
            i += 1 if marker == 0xFF else 2
            continue
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # entropy-coded data up to the next marker (FF 00 is a stuffed FF, FF D0-D7 a restart)
            i = data.find(b"\xff", i)
            while i != -1 and i + 1 < len(data) and (data[i + 1] == 0 or 0xD0 <= data[i + 1] <= 0xD7):
                i = data.find(b"\xff", i + 2)
            if i == -1:
                return False
    return False


def _png_reaches_iend(data: bytes) -> bool:
    """Walk a PNG's chunks (length, type, data, CRC) to IEND."""
    i = 8
    while i + 8 <= len(data):
        if data[i + 4 : i + 8] == b"IEND":
            return True
        i += 12 + int.from_bytes(data[i : i + 4], "big")
    return False


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``[H, W, 4]`` RGBA -> ``[H, W, 3]`` RGB on ``background [3]`` (straight alpha)."""
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
    return rgb * alpha + background * (1.0 - alpha)
