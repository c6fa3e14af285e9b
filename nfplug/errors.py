"""User-facing errors: one line that names the file or option and what is wrong."""

from __future__ import annotations


class NfplugError(Exception):
    """An error caused by the user's input (data, options, checkpoint).

    The CLI prints ``nfplug: error: <message>`` and exits with status 2, without a
    traceback. Messages name the offending file or option, e.g.
    ``transforms_train.json: frame 3: transform_matrix must be 4x4, got 3x4``.
    """


def fail(message: str) -> NfplugError:
    """An :class:`NfplugError` whose message is one line, even if it quotes a multi-line library message."""
    return NfplugError(" ".join(message.split()))
