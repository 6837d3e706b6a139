"""Safe file output: every file xsim writes goes through :func:`atomic_path`, so an interrupted run
leaves either the previous file or the complete new one, never half a file."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it to ``path`` on success.

    The temporary file sits in the same folder (so the rename is atomic on POSIX), starts with a dot
    and ends in ``.tmp``; it is removed if the block raises (including KeyboardInterrupt). The
    destination's folder is created if needed.

    Example::

        with atomic_path("out/table.csv") as tmp:
            table.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
