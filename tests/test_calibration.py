"""HU calibration (xsim.physics.calibration): default curve, user calibrations, errors."""
from __future__ import annotations

import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.physics.calibration import HUCalibration
from xsim.physics.materials import material


def names(cal, index):
    return [cal.materials[i].name for i in np.ravel(index)]


def test_default_reference_points():
    cal = HUCalibration.default()
    hu = np.array([-1000.0, -800.0, -89.0, 0.0, 54.0, 1935.0])
    index, density = cal.apply(hu)
    assert names(cal, index) == ["air", "lung", "adipose", "soft tissue", "soft tissue",
                                 "cortical bone"]
    # Air at NIST's density; water (HU 0) about 1 g/cm^3; ICRU-44 nominal densities at the
    # nodes (NIST SRD 126 Table 2: adipose 0.95, soft tissue 1.06, cortical bone 1.92).
    np.testing.assert_allclose(density, [0.001205, 0.2095, 0.95, 1.0185, 1.06, 1.92], atol=1e-3)
    assert density[3] == pytest.approx(1.0, abs=0.02)


def test_default_density_is_monotone_and_continuous():
    cal = HUCalibration.default()
    hu = np.arange(-1100.0, 3200.0, 0.5)
    _, density = cal.apply(hu)
    steps = np.diff(density.astype(np.float64))
    assert np.all(steps >= 0)
    # Continuous: the largest change over 0.5 HU is the steepest slope (air-adipose, 1.04e-3 /HU).
    assert steps.max() < 0.5 * 1.1e-3


def test_default_clamps_outside_range():
    cal = HUCalibration.default()
    index, density = cal.apply(np.array([-3024.0, 5000.0]))
    assert names(cal, index) == ["air", "cortical bone"]
    assert density[0] == pytest.approx(0.001205)
    assert density[1] == cal.apply(np.array([3071.0]))[1][0]


def test_shape_and_dtypes():
    cal = HUCalibration.default()
    hu = np.zeros((4, 5, 6), dtype=np.int16)
    index, density = cal.apply(hu)
    assert index.shape == density.shape == (4, 5, 6)
    assert index.dtype == np.uint8 and density.dtype == np.float32


def test_nan_and_inf_are_errors():
    cal = HUCalibration.default()
    with pytest.raises(XsimInputError, match="non-finite"):
        cal.apply(np.array([0.0, np.nan]))
    with pytest.raises(XsimInputError, match="non-finite"):
        cal.apply(np.array([np.inf]))


def test_from_dict_and_materials_order():
    cal = HUCalibration.from_dict({"segments": [
        {"hu_low": -1000, "hu_high": 0, "material": "air", "density_low_g_cm3": 0.0012,
         "density_high_g_cm3": 1.0},
        (0, 1000, material("water"), 1.0, 2.0),
    ]})
    assert [m.name for m in cal.materials] == ["air", "water"]
    index, density = cal.apply(np.array([-500.0, 500.0, 1000.0]))
    assert list(index) == [0, 1, 1]
    np.testing.assert_allclose(density, [0.5006, 1.5, 2.0], rtol=1e-6)


CSV_GOOD = """# a two-segment calibration
hu_low,hu_high,material,density_low_g_cm3,density_high_g_cm3
-1000,0,air,0.0012,1.0
0,2000,bone,1.0,1.9
"""


def test_from_csv(tmp_path):
    path = tmp_path / "cal.csv"
    path.write_text(CSV_GOOD)
    cal = HUCalibration.from_csv(path)
    index, density = cal.apply(np.array([-1000.0, 1000.0]))
    assert names(cal, index) == ["air", "cortical bone"]
    np.testing.assert_allclose(density, [0.0012, 1.45], rtol=1e-6)


@pytest.mark.parametrize("line4, message", [
    ("0,2000,bone,1.0,heavy", r"line 4: field density_high_g_cm3 must be a number, got 'heavy'"),
    ("0,2000,bnoe,1.0,1.9", r"field material: unknown material 'bnoe'.*'cortical bone'.*line 4"),
    ("0,2000,bone,1.0", r"line 4: expected 5 fields"),
    ("0,2000,bone,-1.0,1.9", r"density_low_g_cm3 must be > 0.*line 4"),
    ("10,2000,bone,1.0,1.9", r"contiguous"),
])
def test_bad_csv_names_file_line_field(tmp_path, line4, message):
    path = tmp_path / "bad.csv"
    lines = CSV_GOOD.splitlines()
    lines[3] = line4
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(XsimInputError, match=message) as err:
        HUCalibration.from_csv(path)
    assert "bad.csv" in str(err.value)


def test_bad_csv_header_and_missing_file(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("low,high,material\n-1000,0,air\n")
    with pytest.raises(XsimInputError, match=r"header.csv, line 1: header must be"):
        HUCalibration.from_csv(path)
    with pytest.raises(XsimInputError, match="not found"):
        HUCalibration.from_csv(tmp_path / "nope.csv")
