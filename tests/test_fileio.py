"""xsim.fileio: atomic writes (temporary name, rename) and the CSV rows writer."""
import os
import stat

import pytest

from xsim.fileio import append_csv_row, atomic_path, write_csv_rows


def test_atomic_write_leaves_only_the_file_with_usual_permissions(tmp_path):
    path = write_csv_rows(tmp_path / "sub" / "rows.csv", ["a", "b"], [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert path.read_text().splitlines() == ["a,b", "1,x", "2,y"]
    assert os.listdir(path.parent) == ["rows.csv"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # what open() gives, not mkstemp's 0600


def test_interrupted_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.txt"]


def test_appended_rows_follow_one_header(tmp_path):
    path = tmp_path / "manifest.csv"
    append_csv_row(path, ["id", "time_s"], {"id": "a", "time_s": 1.5})
    append_csv_row(path, ["id", "time_s"], {"id": "b", "time_s": 2})
    assert path.read_text().splitlines() == ["id,time_s", "a,1.5", "b,2"]
