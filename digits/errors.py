"""The errors of the core's readers and writers: a data file's is one line that names the file
and what is wrong; a writer's says what it refused to overwrite.

The `digits` command group turns it into a one-line `Error: …` and exit 1, so a reader
anywhere (IDX, .npz, checkpoints) needs no click of its own.
"""

from __future__ import annotations

MAX_REASON = 200  # characters of a library's message kept: state_dict errors list every key


class DataError(ValueError):
    """A file a command reads is corrupt, truncated or holds the wrong content."""


def reason(err: BaseException) -> str:
    """A library exception as one short line: the first sentence of its message, else its type."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    text = text.split(". ")[0].rstrip(".") or type(err).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class NotOwnedError(Exception):
    """An output path holds something its writer did not write; nothing was changed."""
