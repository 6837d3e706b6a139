"""The validation studies run end to end in their quick form: each passes its own criterion and
writes its CSV table and PNG plot (the Monte Carlo studies run in tests/test_montecarlo.py)."""
import pandas as pd
import pytest

from xsim.validate import list_studies, run_studies

QUICK_STUDIES = ["attenuation_vs_nist", "spectrum_hvl", "projector_beam_hardening", "noise_statistics"]


def test_every_study_is_listed_with_a_summary():
    studies = list_studies()
    assert set(QUICK_STUDIES) <= set(studies)
    assert all(summary for summary in studies.values())


@pytest.mark.parametrize("name", QUICK_STUDIES)
def test_quick_study_passes_and_writes_table_and_plot(name, tmp_path):
    assert run_studies([name], out_dir=tmp_path, quick=True) == {name: True}
    tables = list((tmp_path / name).glob("*.csv"))
    plots = list((tmp_path / name).glob("*.png"))
    assert tables and plots
    assert len(pd.read_csv(tables[0])) > 0
    assert not list((tmp_path / name).glob(".*.tmp"))  # nothing half-written left behind
