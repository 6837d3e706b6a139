"""Safe file output: every file xsim writes goes through :func:`atomic_path`, so an interrupted run
leaves either the previous file or the complete new one, never half a file."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it to ``path`` on success.

    The temporary file sits in the same folder (so the rename is atomic on POSIX), starts with a dot
    and ends in ``.tmp``; it is removed if the block raises (including KeyboardInterrupt). The
    destination's folder is created if needed. The path is unique (process id and a random part) but not
    created here: the writer creates the file, so it gets the usual permissions (the umask's), not the
    owner-only ones of ``tempfile.mkstemp``.

    Example::

        with atomic_path("out/table.csv") as tmp:
            table.to_csv(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv_rows(path: str | os.PathLike, columns: list[str], rows: list[dict]) -> Path:
    """Write ``rows`` (dicts keyed by ``columns``) as a CSV file with a header row, atomically."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def append_csv_row(path: str | os.PathLike, columns: list[str], row: dict) -> None:
    """Append one row to a CSV file (created with its header row if missing) and flush it to disk, so that
    a row, once appended, survives a crash (a manifest of finished work)."""
    import csv

    path = Path(path)
    if not path.exists():
        write_csv_rows(path, columns, [])
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, columns).writerow(row)
        f.flush()
        os.fsync(f.fileno())
