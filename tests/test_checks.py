"""Tests for xsim.checks: every message names the parameter, the value and what was expected."""
import numpy as np
import pytest

from xsim.checks import XsimInputError, check_choice, check_positive, check_range, check_type


def test_range_names_parameter_value_and_unit():
    with pytest.raises(XsimInputError, match=r"kvp must lie in \[40, 150\] kV, got 200 kV"):
        check_range("kvp", 200, 40, 150, unit="kV")


def test_range_reports_first_offending_array_element():
    with pytest.raises(XsimInputError, match=r"energy_keV .* got 0.5"):
        check_range("energy_keV", np.array([10.0, 0.5, 300.0]), 1, 200)


def test_nan_and_empty_are_rejected():
    with pytest.raises(XsimInputError, match="must be finite"):
        check_range("x", [1.0, np.nan])
    with pytest.raises(XsimInputError, match="is empty"):
        check_range("x", [])


def test_positive_excludes_zero_and_names_source():
    with pytest.raises(XsimInputError, match=r"density_g_cm3 must lie in \(0, inf\).*got 0.*in spec.yaml"):
        check_positive("density_g_cm3", 0.0, source="spec.yaml")
    assert check_positive("density_g_cm3", 1e-3) == 1e-3


def test_choice_suggests_close_matches():
    with pytest.raises(XsimInputError, match="did you mean 'water'"):
        check_choice("material", "watr", ["water", "air", "lead"])


def test_type():
    with pytest.raises(XsimInputError, match="seed must be int, got str"):
        check_type("seed", "1", int)
