"""Atomic file writes: a reader, or a run killed mid-write, sees the previous complete file or the new one, never half.

Datalists, reports, prediction tables and checkpoints are all written this way, because a hospital run that is
killed (out of memory, pre-empted, SIGKILL) must not leave a truncated file that a resumed run or a reviewer trusts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["write_atomic", "write_text_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    Args:
        path: the file to (re)place; its folder is created.
        write: writes the content to the open file object it is given.
        binary: open the temporary file in binary mode (e.g. for ``torch.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda f: f.write(text))
