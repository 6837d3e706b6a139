"""The console script: --help, --version, info, and argument errors (installed entry point, not just the module)."""
import os
import shutil
import subprocess
import sys

import xsim


def _run(*args, env=None):
    exe = shutil.which("xsim")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "xsim.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


def test_version():
    out = _run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"xsim {xsim.__version__}"


def test_help_lists_commands():
    out = _run("--help")
    assert out.returncode == 0
    assert "usage: xsim" in out.stdout
    assert "info" in out.stdout


def test_info_names_the_cpu_build_and_bad_settings():
    out = _run("info")
    assert out.returncode == 0 and "CPU build:" in out.stdout
    bad = _run("info", env={"XSIM_MARCH_NATIVE": "yes"})
    assert bad.returncode == 2 and "XSIM_MARCH_NATIVE must be auto, 0 or 1, got 'yes'" in bad.stderr


def test_scatter_make_dataset_rejects_bad_kvp_values(tmp_path):
    out = _run("scatter", "make-dataset", "--out", str(tmp_path / "d"), "--kvp-values", "60,abc")
    assert out.returncode == 2
    assert "comma-separated voltages in kV" in out.stderr and "'60,abc'" in out.stderr
    out = _run("scatter", "make-dataset", "--out", str(tmp_path / "d"), "--kvp-values", "60,150")
    assert out.returncode != 0 and "kvp_values" in out.stderr
    assert not (tmp_path / "d").exists()  # refused before any work


def test_scatter_make_dataset_varied(tmp_path):
    bad = _run("scatter", "make-dataset", "--out", str(tmp_path / "bad"), "--varied", "2", "--body-fraction", "1.5")
    assert bad.returncode != 0 and "body_fraction" in bad.stderr and not (tmp_path / "bad").exists()
    done = _run("scatter", "make-dataset", "--out", str(tmp_path / "d"), "--varied", "1", "--photons", "1e5",
                "--workers", "0")
    assert done.returncode == 0, done.stderr
    from xsim.scatter.data import load_dataset, plan_varied_cases

    data = load_dataset(tmp_path / "d")
    assert data["cases"] == plan_varied_cases(1, photons=1e5, seed=0)


def test_validate_lists_studies_and_rejects_unknown_names():
    listed = _run("validate", "--list")
    assert listed.returncode == 0
    assert "spectrum_hvl" in listed.stdout
    bad = _run("validate", "spectrum_hv")
    assert bad.returncode == 2
    assert "did you mean 'spectrum_hvl'" in bad.stderr


def test_phantom_command_writes_a_loadable_phantom(tmp_path):
    out = tmp_path / "thorax.h5"
    done = _run("phantom", "thorax", "--seed", "1", "--voxel-mm", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    phantom = xsim.Phantom.load(out)
    reference = xsim.phantoms.thorax(seed=1, voxel_mm=4.0)
    assert (phantom.material_index == reference.material_index).all()
    bad = _run("phantom", "thorax", "--voxel-mm", "-1", "--out", str(tmp_path / "bad.h5"))
    assert bad.returncode == 2 and "voxel_mm" in bad.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_mc_command_writes_a_loadable_result(tmp_path):
    out = tmp_path / "mc.h5"
    done = _run("mc", "thorax:seed=1,voxel_mm=6", "--kvp", "80", "--photons", "2e4", "--batches", "2",
                "--shape", "16", "16", "--pixel-mm", "20", "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = xsim.MCResult.load(out)
    assert result.primary.shape == (16, 16) and result.photons == 20_000
    assert "80 kVp" in result.settings["source"]
    both = _run("mc", "thorax", "--kvp", "80", "--energy-kev", "60", "--out", str(tmp_path / "x.h5"))
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    bad = _run("mc", "thorax:voxel_mm=6", "--photons", "0", "--out", str(tmp_path / "bad.h5"))
    assert bad.returncode == 2 and "photons" in bad.stderr
    assert not (tmp_path / "bad.h5").exists()
