"""Datasets: resume after an interruption ends with exactly the planned images; Dask and local runs give
identical images for the same seeds; malformed specs fail before any work, naming the field and line."""
import h5py
import numpy as np
import pytest

from xsim.checks import XsimInputError
from xsim.datasets import load_item, load_spec, read_manifest, run_dataset

SPEC = """\
seed: 5
sources:
  - thorax:seed=1,voxel_mm=6,vessels=true,tool=true
views:
  per_source: {per_source}
  lao_deg: [-30, 30]
  cran_deg: [-15, 15]
  isocenter_mm: heart_center
  isocenter_jitter_mm: 5
detector: {{shape: [48, 48], pixel_mm: 5.0}}
settings:
  kvp: [70, 90]
  mas: [0.5]
  scatter: none
labels:
  mask_materials: [iodine contrast]
"""


def _spec(tmp_path, per_source=10, text=None):
    path = tmp_path / "spec.yaml"
    path.write_text(text if text is not None else SPEC.format(per_source=per_source))
    return path


def _stored_groups(out):
    groups = []
    for shard in out.glob("shard-*.h5"):
        with h5py.File(shard, "r") as f:
            groups += list(f.keys())
    return groups


def test_interrupted_run_resumes_to_exactly_the_planned_images(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "ds"
    first = run_dataset(spec, out_dir=out, workers=0, max_items=10, progress=False)
    assert (first.rendered, first.remaining) == (10, 10)
    # an item cut short: its group reached a shard but its manifest row was never written
    shard = next(out.glob("shard-*.h5"))
    with h5py.File(shard, "a") as f:
        f.create_group("item0000015").create_dataset("image", data=np.zeros((2, 2)))
    second = run_dataset(spec, out_dir=out, workers=0, progress=False)
    assert (second.already_done, second.rendered, second.failures) == (10, 10, [])
    manifest = read_manifest(out)
    assert len(manifest) == 20 and manifest["item_id"].nunique() == 20
    assert sorted(_stored_groups(out)) == sorted(manifest["item_id"])
    third = run_dataset(spec, out_dir=out, workers=0, progress=False)
    assert third.rendered == 0 and third.already_done == 20
    item = load_item(out, "item0000015")
    assert item["image"].shape == (48, 48) and item["masks"]["iodine contrast"].any()
    assert item["settings"]["item"]["item_id"] == "item0000015"


def test_dask_local_cluster_and_local_processes_give_the_same_images(tmp_path):
    from dask.distributed import LocalCluster

    spec = _spec(tmp_path, per_source=2)
    local = run_dataset(spec, out_dir=tmp_path / "local", workers=2, progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dask = run_dataset(spec, out_dir=tmp_path / "dask", scheduler=cluster.scheduler_address, progress=False)
    assert local.rendered == dask.rendered == 4 and not local.failures and not dask.failures
    for item_id in read_manifest(tmp_path / "local")["item_id"]:
        a, b = load_item(tmp_path / "local", item_id), load_item(tmp_path / "dask", item_id)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["camera"].matrix, b["camera"].matrix)


def test_another_spec_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "ds"
    run_dataset(_spec(tmp_path, per_source=1), out_dir=out, workers=0, progress=False)
    with pytest.raises(XsimInputError, match="holds another dataset"):
        run_dataset(_spec(tmp_path, per_source=2), out_dir=out, workers=0, progress=False)


@pytest.mark.parametrize("old, new, message", [
    ("  kvp: [70, 90]", "  kvp: [70, 200]", r"line 12: field 'settings.kvp\[1\]': kvp must lie in \[40, 150\]"),
    ("  mas: [0.5]", "  mas: [0]", r"line 13: field 'settings.mas\[0\]': mas must lie in \(0, inf\)"),
    ("  - thorax:seed=1,voxel_mm=6,vessels=true,tool=true", "  - ct/missing.nii.gz",
     r"line 3: field 'sources\[0\]': CT or phantom file .*missing.nii.gz' does not exist"),
    ("  per_source: 10", "  per_sourse: 10", r"line 5: field 'views.per_sourse': .*did you mean 'per_source'"),
    ("  kvp: [70, 90]", "  kvp: seventy", r"line 12: field 'settings.kvp': must be a number"),
    ("  lao_deg: [-30, 30]", "  lao_deg: [-30, 30", r"spec.yaml, line \d+: not valid YAML"),
])
def test_bad_specs_fail_before_any_work(tmp_path, old, new, message):
    text = SPEC.format(per_source=10)
    assert old in text
    spec = _spec(tmp_path, text=text.replace(old, new))
    with pytest.raises(XsimInputError, match=message):
        run_dataset(spec, out_dir=tmp_path / "ds", workers=0, progress=False)
    assert not (tmp_path / "ds").exists()


def test_plan_is_deterministic(tmp_path):
    a, b = load_spec(_spec(tmp_path)), load_spec(_spec(tmp_path))
    assert a.fingerprint == b.fingerprint and len(a.items) == 20
    angles = [(i["lao_deg"], i["cran_deg"]) for i in a.items]
    assert len(set(angles)) == 20 and all(-30 <= lao <= 30 and -15 <= cran <= 15 for lao, cran in angles)


def test_cli_dataset_run(tmp_path, capsys):
    from xsim import cli

    spec = _spec(tmp_path, per_source=1)
    assert cli.main(["dataset", "run", str(spec), "--out", str(tmp_path / "ds"), "--workers", "0"]) == 0
    assert "2 rendered" in capsys.readouterr().out
    bad = _spec(tmp_path, text=SPEC.format(per_source=1).replace("mas: [0.5]", "mas: [0.0]"))
    assert cli.main(["dataset", "run", str(bad), "--out", str(tmp_path / "ds2")]) == 2
    assert "field 'settings.mas[0]'" in capsys.readouterr().err


def test_failed_items_are_reported_with_their_reason_and_retried(tmp_path):
    text = SPEC.format(per_source=1).replace("isocenter_mm: heart_center", "isocenter_mm: no_such_landmark")
    spec, out = _spec(tmp_path, text=text), tmp_path / "ds"
    summary = run_dataset(spec, out_dir=out, workers=0, progress=False)
    assert summary.rendered == 0 and len(summary.failures) == 2
    assert "no_such_landmark" in summary.failures[0][1] and "FAILED item0000000" in str(summary)
    again = run_dataset(spec, out_dir=out, workers=0, progress=False)
    assert len(again.failures) == 2 and again.already_done == 0  # retried, not recorded as done


def test_bad_procedural_source_names_its_line(tmp_path):
    text = SPEC.format(per_source=1).replace("thorax:seed=1,voxel_mm=6", "thorax:sead=1,voxel_mm=6")
    with pytest.raises(XsimInputError, match=r"line 3: field 'sources\[0\]': .*did you mean 'seed'"):
        load_spec(_spec(tmp_path, text=text))
