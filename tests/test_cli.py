"""The console script answers --help and --version (installed entry point, not just the module)."""
import shutil
import subprocess
import sys

import xsim


def _run(*args):
    exe = shutil.which("xsim")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "xsim.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_version():
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"xsim {xsim.__version__}"


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0
    assert "usage: xsim" in out.stdout
    assert "info" in out.stdout


def test_validate_lists_studies_and_rejects_unknown_names():
    listed = _run("validate", "--list")
    assert listed.returncode == 0
    assert "spectrum_hvl" in listed.stdout
    bad = _run("validate", "spectrum_hv")
    assert bad.returncode == 2
    assert "did you mean 'spectrum_hvl'" in bad.stderr
