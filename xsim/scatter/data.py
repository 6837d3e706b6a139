"""Scatter training data: Monte Carlo scatter images paired with the CNN's ray-cast inputs.

Owns the case plans (:func:`plan_cases`: procedural phantoms in one geometry; :func:`plan_varied_cases`:
random CT-like bodies and procedural phantoms over the C-arm geometries, grids, views and beams users bring),
one case's simulation (:func:`simulate_case`), the resumable parallel run (:func:`make_dataset`) and the
reader (:func:`load_dataset`). Every setting of a case is drawn from the plan seed and the case's index.

Geometry: by default (``GEOMETRY``) a C-arm with SDD 1020 mm, SID 760 mm, a 256 x 256 panel of 1.2 mm (307
mm); a case may carry its own (``sdd_mm``, ``sid_mm``, ``panel_mm`` (rows, cols), ``grid``), always read at
256 x 256 pixels and binned 4 x 4 onto the CNN's 64 x 64 working grid. Per case:

* ray cast on the full 256 x 256 panel, reduced to :func:`xsim.scatter.input_features` (area means);
* Monte Carlo on the binned camera (64 x 64 pixels of 4.8 mm), tallied per binned pixel;
* target: the scatter fraction ``f = S / F`` with ``F`` the flat field of the binned pixel (sum of its 16
  panel pixels), and its standard error from the Monte Carlo batches.

Phantoms are the procedural ones (:mod:`xsim.phantoms`) at coarse voxels (scatter depends on the gross
anatomy), cropped to their non-air voxels (the Monte Carlo needs the phantom box before the detector; the
air outside the body is negligible), and the random bodies of :mod:`xsim.scatter.bodies` (kind ``"body"``).
Splits are by phantom seed: ``train`` and ``test`` plans take disjoint seed lists, so no anatomy is in both.

Output folder: ``plan.json`` (the plan; a rerun with another plan is refused), ``shard-*.h5`` (one per
worker process; one group per case) and ``manifest.csv`` (one row per finished case, appended after the
case's group is written and its shard closed). A rerun skips finished cases and drops groups without a
manifest row.
"""
from __future__ import annotations

import csv
import json
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..checks import XsimInputError, check_choice, check_positive, check_range
from ..datasets import prune_shards, run_tasks
from ..fileio import append_csv_row, atomic_path, write_csv_rows

__all__ = ["GEOMETRY", "KINDS", "SOURCES", "case_camera", "case_grid", "case_inputs", "case_phantom", "export_cases",
           "load_dataset", "make_dataset", "plan_cases", "plan_varied_cases", "refresh_features", "simulate_case"]

GEOMETRY = {"sdd_mm": 1020.0, "sid_mm": 760.0, "detector_shape": [256, 256], "pixel_mm": 1.2, "bin": 4}
KINDS = ("thorax", "abdomen", "pelvis", "head")
SOURCES = (*KINDS, "body")  # "body": xsim.scatter.bodies.random_body
VOXEL_MM = {"thorax": 5.0, "abdomen": 5.0, "pelvis": 5.0, "head": 4.0}
# View ranges keep every cropped phantom box in front of the detector plane (260 mm beyond the isocenter).
LAO_RANGE_DEG, CRAN_RANGE_DEG = (-35.0, 35.0), (-15.0, 15.0)
ISO_JITTER_MM = (5.0, 5.0, 15.0)
KVP_RANGE_DATA = (60.0, 120.0)
AL_RANGE_MM, CU_CHOICES_MM = (2.0, 4.0), (0.0, 0.1, 0.2, 0.3)
MANIFEST = "manifest.csv"
PLAN = "plan.json"
# The ranges plan_varied_cases draws from (the model card lists those of the shipped model's data).
SDD_RANGE_MM = (900.0, 1300.0)
SID_FRACTION_RANGE = (0.55, 0.8)  # SID / SDD
PANEL_RANGE_MM = (200.0, 430.0)
PANEL_ASPECTS = (1.0, 1.0, 1.0, 4.0 / 3.0, 3.0 / 4.0)  # cols / rows
VARIED_LAO_RANGE_DEG, VARIED_CRAN_RANGE_DEG = (-90.0, 90.0), (-40.0, 40.0)
GRID_PROBABILITY = 0.4
GRID_RATIOS, GRID_LINES_PER_CM = (6.0, 8.0, 10.0, 12.0, 15.0), (40.0, 60.0, 70.0, 80.0)
COLUMNS = ["case_id", "split", "kind", "phantom_seed", "voxel_mm", "lao_deg", "cran_deg", "kvp", "al_mm", "cu_mm",
           "photons", "mc_seed", "sdd_mm", "sid_mm", "panel_rows_mm", "panel_cols_mm", "grid_ratio", "shard",
           "mc_time_s", "noise_median"]


def plan_cases(phantom_seeds, kinds=KINDS, views: int = 4, photons: float = 5e6, seed: int = 0,
               split: str = "train", kvp_range=KVP_RANGE_DATA, kvp_values=None) -> list[dict]:
    """The cases of a dataset: kinds x phantom seeds x views, settings drawn per case.

    Parameters
    ----------
    phantom_seeds : iterable of int
        Anatomies (seeds of :mod:`xsim.phantoms`); keep train and test lists disjoint.
    kinds : iterable of str
        Phantom kinds among ``KINDS``.
    views : int
        Views per phantom; LAO, CRAN, isocenter jitter, kVp (uniform in 60-120), Al (2-4 mm) and Cu
        (0-0.3 mm) filtration are drawn per case from ``(seed, kind, phantom seed, view)``.
    photons : float
        Monte Carlo histories per case.
    seed : int
        Plan seed (also keys each case's Monte Carlo seed).
    split : str
        Label stored with each case ("train", "test", ...).
    kvp_range : (float, float)
        Tube voltages are drawn uniformly in this range, kV (within 60-120, the range of the training data).
    kvp_values : sequence of float, optional
        Instead, these voltages in turn over the cases in plan order (kinds, then seeds, then views), e.g. to
        stratify a held-out set over the kVp range; the other settings stay those drawn from the plan seed.
    """
    seeds = [int(s) for s in phantom_seeds]
    if not seeds or min(seeds) < 0:
        raise XsimInputError(f"phantom_seeds must be a non-empty list of integers >= 0, got {phantom_seeds!r}")
    kinds = list(kinds)
    for kind in kinds:
        check_choice("kind", kind, KINDS)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise XsimInputError(f"views must be an integer >= 1, got {views!r}")
    check_positive("photons", photons)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise XsimInputError(f"seed must be an integer >= 0, got {seed!r}")
    lo, hi = (float(v) for v in kvp_range)
    check_range("kvp_range[0]", lo, *KVP_RANGE_DATA, unit="kV")
    check_range("kvp_range[1]", hi, lo, KVP_RANGE_DATA[1], unit="kV")
    if kvp_values is not None:
        kvp_values = [float(v) for v in kvp_values]
        if not kvp_values:
            raise XsimInputError("kvp_values must list at least one voltage, got an empty list")
        for v in kvp_values:
            check_range("kvp_values", v, *KVP_RANGE_DATA, unit="kV")
    cases = []
    for kind in kinds:
        for s in seeds:
            for v in range(views):
                rng = np.random.default_rng(np.random.SeedSequence([int(seed), KINDS.index(kind), s, v]))
                cases.append({
                    "case_id": f"{split}-{kind}-s{s:04d}-v{v:02d}", "split": split, "kind": kind,
                    "phantom_seed": s, "voxel_mm": VOXEL_MM[kind],
                    "lao_deg": float(rng.uniform(*LAO_RANGE_DEG)), "cran_deg": float(rng.uniform(*CRAN_RANGE_DEG)),
                    "iso_mm": (rng.normal(size=3) * ISO_JITTER_MM).tolist(),
                    "kvp": float(np.round(rng.uniform(lo, hi), 1)),
                    "al_mm": float(np.round(rng.uniform(*AL_RANGE_MM), 2)),
                    "cu_mm": float(rng.choice(CU_CHOICES_MM)),
                    "photons": int(photons), "mc_seed": int(rng.integers(0, 2**31 - 1)),
                })
    if kvp_values is not None:
        for i, case in enumerate(cases):
            case["kvp"] = kvp_values[i % len(kvp_values)]
    return cases


def plan_varied_cases(n_cases: int, photons: float = 4e6, seed: int = 0, split: str = "train",
                      procedural_seeds=range(0, 30), body_seeds=range(0, 100000), body_fraction: float = 0.6,
                      kvp_range=KVP_RANGE_DATA) -> list[dict]:
    """Cases over the geometries, grids, views and beams users bring, on random bodies and procedural phantoms.

    Per case, from ``(seed, index)``: the source (a random body with probability ``body_fraction``, its seed
    drawn from ``body_seeds``; else a procedural kind and seed from ``procedural_seeds``), SDD in
    ``SDD_RANGE_MM``, SID a fraction ``SID_FRACTION_RANGE`` of it, a panel side in ``PANEL_RANGE_MM`` with an
    aspect from ``PANEL_ASPECTS``, an anti-scatter grid with probability ``GRID_PROBABILITY`` (ratio and strip
    density from ``GRID_RATIOS``, ``GRID_LINES_PER_CM``), LAO/RAO and CRAN/CAUD in ``VARIED_*_RANGE_DEG``, the
    isocenter near the phantom's centre of mass, kVp in ``kvp_range``, Al 2-4 mm, Cu 0-0.3 mm. A draw whose
    phantom would reach past the detector plane is drawn again (a large body seen laterally with a short air
    gap). Case ids are ``{split}-{index:05d}``; the cases depend on ``(seed, index)`` only, ``split`` names
    them: another set (a test set) takes another ``seed``. The validation suites are fixed cases written
    apart from this generator (validation/scatter_cnn.py).
    """
    from ..montecarlo import _check_phantom_in_field, _field_geometry

    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or n_cases < 1:
        raise XsimInputError(f"n_cases must be an integer >= 1, got {n_cases!r}")
    check_positive("photons", photons)
    check_range("body_fraction", body_fraction, 0.0, 1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise XsimInputError(f"seed must be an integer >= 0, got {seed!r}")
    procedural_seeds, body_seeds = [int(v) for v in procedural_seeds], [int(v) for v in body_seeds]
    if body_fraction > 0 and not body_seeds:
        raise XsimInputError("body_seeds is empty but body_fraction > 0: give seeds to draw random bodies from")
    if min(body_seeds + procedural_seeds, default=0) < 0:
        raise XsimInputError(f"body_seeds and procedural_seeds must be >= 0, got minimum "
                             f"{min(body_seeds + procedural_seeds)}")
    lo, hi = (float(v) for v in kvp_range)
    check_range("kvp_range[0]", lo, *KVP_RANGE_DATA, unit="kV")
    check_range("kvp_range[1]", hi, lo, KVP_RANGE_DATA[1], unit="kV")
    cases = []
    for index in range(n_cases):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CA7, index]))
        if rng.random() < body_fraction or not procedural_seeds:
            kind, phantom_seed, voxel_mm = "body", int(rng.choice(body_seeds)), None
        else:
            kind = str(rng.choice(KINDS))
            phantom_seed, voxel_mm = int(rng.choice(procedural_seeds)), VOXEL_MM[kind]
        phantom = case_phantom({"kind": kind, "phantom_seed": phantom_seed, "voxel_mm": voxel_mm})
        centre = phantom.center_of_mass_mm()
        for _attempt in range(100):
            sdd = float(np.round(rng.uniform(*SDD_RANGE_MM), 1))
            sid = float(np.round(sdd * rng.uniform(*SID_FRACTION_RANGE), 1))
            side = rng.uniform(*PANEL_RANGE_MM)
            aspect = float(rng.choice(PANEL_ASPECTS))
            rows_mm = side / np.sqrt(aspect)
            panel = [float(np.round(np.clip(rows_mm, *PANEL_RANGE_MM), 1)),
                     float(np.round(np.clip(rows_mm * aspect, *PANEL_RANGE_MM), 1))]
            grid = None
            if rng.random() < GRID_PROBABILITY:
                grid = {"ratio": float(rng.choice(GRID_RATIOS)), "strips_per_cm": float(rng.choice(GRID_LINES_PER_CM))}
            case = {
                "case_id": f"{split}-{index:05d}", "split": split, "kind": kind, "phantom_seed": phantom_seed,
                "voxel_mm": voxel_mm, "lao_deg": float(rng.uniform(*VARIED_LAO_RANGE_DEG)),
                "cran_deg": float(rng.uniform(*VARIED_CRAN_RANGE_DEG)),
                "iso_mm": (centre + rng.normal(size=3) * ISO_JITTER_MM).tolist(),
                "kvp": float(np.round(rng.uniform(lo, hi), 1)), "al_mm": float(np.round(rng.uniform(*AL_RANGE_MM), 2)),
                "cu_mm": float(rng.choice(CU_CHOICES_MM)), "photons": int(photons),
                "mc_seed": int(rng.integers(0, 2**31 - 1)), "sdd_mm": sdd, "sid_mm": sid, "panel_mm": panel,
                "grid": grid,
            }
            camera = case_camera(case)
            try:
                _check_phantom_in_field(phantom, camera, _field_geometry(camera))
            except XsimInputError:
                continue
            cases.append(case)
            break
        else:
            raise XsimInputError(f"plan_varied_cases: no geometry fits phantom {kind} seed {phantom_seed} "
                                 "(too large for the detector distances drawn)")
    return cases


def case_phantom(case: dict):
    """The phantom of a case: a procedural kind (air cropped), a random body (kind ``"body"``), or, for the
    validation suites, a held-out body (``"heldout"``, named by ``case["body"]``) or a CT file (``"ct"``,
    ``case["ct_path"]``)."""
    from . import bodies

    if case["kind"] == "body":
        return bodies.random_body(case["phantom_seed"], case.get("voxel_mm"))
    if case["kind"] == "heldout":  # validation only: xsim.scatter.bodies.HELDOUT_BODIES
        return bodies.heldout_body(case["body"], case.get("voxel_mm") or 4.0)
    if case["kind"] == "ct":  # validation only: a CT file
        return bodies.ct_phantom(case["ct_path"], case.get("voxel_mm") or 3.0)
    return _phantom(case["kind"], case["phantom_seed"], case["voxel_mm"])


@lru_cache(maxsize=2)
def _phantom(kind: str, seed: int, voxel_mm: float):
    from .. import phantoms
    from ..volume import Phantom

    full = getattr(phantoms, kind)(seed=seed, voxel_mm=voxel_mm)
    inside = np.argwhere(full.material_index != 0)
    lo, hi = inside.min(axis=0), inside.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    shift = np.eye(4)
    shift[:3, 3] = lo
    return Phantom(full.material_index[box], full.density_g_cm3[box], full.affine @ shift, full.materials,
                   landmarks=full.landmarks, source=f"{kind}:seed={seed},voxel_mm={voxel_mm:g} (air cropped)")


def case_camera(case: dict):
    """The full-panel camera of a case (``.binned(GEOMETRY['bin'])`` is the Monte Carlo's): the case's own
    geometry, else ``GEOMETRY``."""
    from ..geometry import CArm

    shape = tuple(GEOMETRY["detector_shape"])
    if "sdd_mm" in case:
        pixel = (case["panel_mm"][0] / shape[0], case["panel_mm"][1] / shape[1])
        arm = CArm(case["sdd_mm"], case["sid_mm"], shape, pixel)
    else:
        arm = CArm(GEOMETRY["sdd_mm"], GEOMETRY["sid_mm"], shape, GEOMETRY["pixel_mm"])
    return arm.view(case["lao_deg"], case["cran_deg"], isocenter_mm=case["iso_mm"])


def case_grid(case: dict):
    """The case's anti-scatter grid (focused on the source), or None."""
    if not case.get("grid"):
        return None
    from ..montecarlo import AntiScatterGrid

    return AntiScatterGrid(ratio=case["grid"]["ratio"], strips_per_cm=case["grid"]["strips_per_cm"])


def case_spectrum(case: dict):
    from ..physics.spectra import Spectrum

    filtration = {"Al": case["al_mm"], **({"Cu": case["cu_mm"]} if case["cu_mm"] > 0 else {})}
    return Spectrum.tungsten(case["kvp"], filtration)


def case_inputs(case: dict, threads: int | None = None) -> dict:
    """The ray cast of a case reduced to the working grid: ``features`` (N_INPUTS, 64, 64) float32
    (:func:`xsim.scatter.input_features`), ``flat_keV`` (64, 64): flat field per binned pixel per mAs, keV,
    ``transmission``: ray-cast primary / flat field (area mean); and the ``phantom``, ``camera``, ``spectrum``
    and ``grid`` of the case."""
    from ..projector import project
    from . import WORK_SHAPE, ScatterGeometry, area_resample, input_features

    phantom = case_phantom(case)
    camera, spectrum, grid = case_camera(case), case_spectrum(case), case_grid(case)
    proj = project(phantom, camera, spectrum=spectrum, threads=threads)
    geometry = ScatterGeometry.of(camera, phantom.center_of_mass_mm(), grid)
    features = input_features(proj.primary, proj.flat_field, proj.line_integrals, spectrum.kvp,
                              spectrum.mean_energy_keV, geometry)
    # the binned pixel's flat field is the sum over its bin x bin panel pixels
    flat = area_resample(proj.flat_field[None], WORK_SHAPE)[0] * GEOMETRY["bin"] ** 2
    transmission = area_resample(proj.transmission[None], WORK_SHAPE)[0]
    return {"features": features, "flat_keV": flat.astype(np.float32), "transmission": transmission.astype(np.float32),
            "phantom": phantom, "camera": camera, "spectrum": spectrum, "grid": grid}


def simulate_case(case: dict, threads: int | None = None) -> dict:
    """Ray cast and Monte Carlo of one case; returns its arrays (working grid) and timing.

    Returns
    -------
    dict
        ``features``, ``transmission``, ``flat_keV`` of :func:`case_inputs`; ``fraction`` and ``fraction_std``
        (64, 64): MC scatter / flat field and its standard error; ``mc_primary_fraction``: MC primary / flat
        field; ``mc_time_s``.
    """
    from ..montecarlo import monte_carlo
    from . import WORK_SHAPE

    inputs = case_inputs(case, threads)
    coarse = inputs["camera"].binned(GEOMETRY["bin"])
    if coarse.detector_shape != WORK_SHAPE:
        raise XsimInputError(f"GEOMETRY bins to {coarse.detector_shape}, the CNN works on {WORK_SHAPE}")
    flat = inputs["flat_keV"].astype(np.float64)
    start = time.perf_counter()
    mc = monte_carlo(inputs["phantom"], coarse, spectrum=inputs["spectrum"], photons=case["photons"],
                     seed=case["mc_seed"], batches=10, threads=threads, progress=False, tally_deposit=False,
                     grid=inputs["grid"])
    return {"features": inputs["features"], "fraction": (mc.scatter / flat).astype(np.float32),
            "fraction_std": (mc.scatter_std / flat).astype(np.float32),
            "mc_primary_fraction": (mc.primary / flat).astype(np.float32),
            "transmission": inputs["transmission"], "flat_keV": inputs["flat_keV"],
            "mc_time_s": time.perf_counter() - start}


def refresh_features(data_dir: str | os.PathLike, out_dir: str | os.PathLike, case_ids: list[str] | None = None,
                     threads: int | None = None) -> Path:
    """Copy finished cases into a new, compact dataset folder with their CNN inputs recomputed by the current
    :func:`xsim.scatter.input_features` (a ray cast per case); the Monte Carlo targets are kept. For stored
    references (tests/data) after the inputs change."""
    ids = [r["case_id"] for r in _read_rows(Path(data_dir))] if case_ids is None else list(case_ids)
    return _copy_cases(data_dir, out_dir, ids, recompute=lambda case: case_inputs(case, threads))


def _run_case(case: dict, out_dir: str, threads: int | None) -> dict:
    """Simulate a case, store it in this worker's shard, return its manifest row (runs in a worker)."""
    import h5py

    from .. import __version__
    from ..datasets import _shard_name

    arrays = simulate_case(case, threads)
    shard = _shard_name()
    with h5py.File(Path(out_dir) / shard, "a") as f:
        if case["case_id"] in f:  # left by an interrupted run of a process with the same id
            del f[case["case_id"]]
        group = f.create_group(case["case_id"])
        for name, value in arrays.items():
            if name != "mc_time_s":
                group.create_dataset(name, data=value)
        group.attrs.update({"case": json.dumps(case), "geometry": json.dumps(GEOMETRY), "xsim_version": __version__,
                            "mc_time_s": arrays["mc_time_s"],
                            "units": "fraction*: per flat-field signal of the same binned pixel; flat_keV: keV "
                                     "per binned pixel per mAs"})
    noise = arrays["fraction_std"][arrays["fraction"] > 0] / arrays["fraction"][arrays["fraction"] > 0]
    row = {k: case[k] for k in COLUMNS if k in case}
    camera = case_camera(case)
    row.update(sdd_mm=camera.sdd_mm, sid_mm=case.get("sid_mm", GEOMETRY["sid_mm"]),
               panel_rows_mm=float(camera.detector_shape[0] * camera.pixel_mm[0]),
               panel_cols_mm=float(camera.detector_shape[1] * camera.pixel_mm[1]),
               grid_ratio=(case.get("grid") or {}).get("ratio", 0.0))
    row.update(shard=shard, mc_time_s=round(arrays["mc_time_s"], 3), noise_median=float(np.median(noise)))
    return row


def make_dataset(out_dir: str | os.PathLike, cases: list[dict], workers: int = 1, progress: bool = True,
                 scheduler: str | None = None) -> dict:
    """Simulate (or finish simulating) the cases into ``out_dir``; resumable, parallel over processes or over
    a Dask cluster. The Monte Carlo runs on the default backend (``XSIM_BACKEND=cuda``: the GPU; then one
    worker per GPU).

    Parameters
    ----------
    out_dir : path
        Dataset folder (created).
    cases : list of dict
        From :func:`plan_cases`; must equal the plan already in ``out_dir``, if any.
    workers : int
        Local processes (0: in this process). Each gets ``cpu_count // workers`` kernel threads.
    progress : bool
        tqdm progress bar.
    scheduler : str, optional
        Dask scheduler address (``tcp://host:8786``): simulate on that cluster's workers (which must see
        ``out_dir``, a shared folder) instead of local processes; ``workers`` is then ignored.

    Returns
    -------
    dict
        ``{"done": finished before, "simulated": n, "failed": [(case_id, reason)], "elapsed_s": s}``.
    """
    from tqdm import tqdm

    from ..datasets import _exclusive

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise XsimInputError(f"workers must be an integer >= 0, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _check_plan(out, cases)
        done = _resume(out)
        todo = [c for c in cases if c["case_id"] not in done]
        summary = {"done": len(done), "simulated": 0, "failed": [], "elapsed_s": 0.0}
        start = time.perf_counter()
        bar = tqdm(total=len(todo), unit="case", disable=not progress, desc="xsim scatter make-dataset")
        try:
            for case_id, row, error in run_tasks(_run_case, todo, "case_id", out, workers, scheduler):
                if error is None:
                    append_csv_row(out / MANIFEST, COLUMNS, row)
                    summary["simulated"] += 1
                else:
                    summary["failed"].append((case_id, error))
                bar.update(1)
        finally:
            bar.close()
            summary["elapsed_s"] = time.perf_counter() - start
    return summary


def _check_plan(out: Path, cases: list[dict]) -> None:
    path = out / PLAN
    text = json.dumps({"geometry": GEOMETRY, "cases": cases}, sort_keys=True)
    if path.exists():
        if json.loads(path.read_text()) != json.loads(text):
            raise XsimInputError(f"{out} holds another scatter dataset (its {PLAN} differs); use a new folder")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _read_rows(out: Path) -> list[dict]:
    path = out / MANIFEST
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("noise_median")]  # a row cut short by a crash is dropped


def _resume(out: Path) -> set[str]:
    """Finished case ids; drops shard groups without a manifest row and rows without a group."""
    return {r["case_id"] for r in prune_shards(out, _read_rows(out), "case_id", out / MANIFEST, COLUMNS)}


def load_dataset(out_dir: str | os.PathLike | list) -> dict:
    """All finished cases of a dataset folder (or of several, concatenated), in manifest order.

    Returns
    -------
    dict
        ``cases`` (list of dict, the plan entries), ``rows`` (manifest rows) and stacked float32 arrays
        ``features`` (N, len(FEATURES), 64, 64), ``fraction``, ``fraction_std``, ``mc_primary_fraction``, ``transmission``,
        ``flat_keV`` (N, 64, 64).
    """
    import h5py

    if isinstance(out_dir, (list, tuple)):
        parts = [load_dataset(d) for d in out_dir]
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in ("cases", "rows")}
        merged.update(cases=[c for p in parts for c in p["cases"]], rows=[r for p in parts for r in p["rows"]])
        return merged
    out = Path(out_dir)
    rows = _read_rows(out)
    if not rows:
        raise XsimInputError(f"{out} has no finished scatter cases (no {MANIFEST} rows): run "
                             "`xsim scatter make-dataset` first")
    names = ("features", "fraction", "fraction_std", "mc_primary_fraction", "transmission", "flat_keV")
    data = {n: [] for n in names}
    cases = []
    for row in rows:
        with h5py.File(out / row["shard"], "r") as f:
            group = f[row["case_id"]]
            for n in names:
                data[n].append(group[n][()])
            cases.append(json.loads(group.attrs["case"]))
    from . import FEATURES

    result = {n: np.stack(v).astype(np.float32) for n, v in data.items()}
    if result["features"].shape[1] != len(FEATURES):
        raise XsimInputError(f"{out}: the cases hold {result['features'].shape[1]} input features, this xsim's "
                             f"model takes {len(FEATURES)} ({', '.join(FEATURES)}): the data were made by an older "
                             "xsim; recompute them with xsim.scatter.data.refresh_features (no Monte Carlo needed)")
    result.update(cases=cases, rows=rows)
    return result


def export_cases(data_dir: str | os.PathLike | list, out_dir: str | os.PathLike, case_ids: list[str]) -> Path:
    """Copy some finished cases into a new, compact dataset folder (one gzip shard; :func:`load_dataset` reads it).

    ``data_dir`` is one dataset folder or a list of them (case ids looked up in all; they must not repeat).
    Used for the small held-out sets the tests keep (tests/data/scatter_heldout, tests/data/scatter_suites).
    """
    return _copy_cases(data_dir, out_dir, list(case_ids))


def _copy_cases(data_dir, out_dir, case_ids: list[str], recompute=None) -> Path:
    """:func:`export_cases`; with ``recompute(case) -> dict``, the arrays it returns replace the stored ones."""
    import h5py

    sources = [Path(d) for d in (data_dir if isinstance(data_dir, (list, tuple)) else [data_dir])]
    out = Path(out_dir)
    rows = {}
    for src in sources:
        for r in _read_rows(src):
            if r["case_id"] in rows:
                raise XsimInputError(f"case {r['case_id']!r} is in both {rows[r['case_id']][1]} and {src}")
            rows[r["case_id"]] = (r, src)
    missing = [c for c in case_ids if c not in rows]
    if missing:
        raise XsimInputError(f"cases {missing} are not finished in {', '.join(map(str, sources))}")
    out.mkdir(parents=True, exist_ok=True)
    shard = "shard-export.h5"
    with atomic_path(out / shard) as tmp, h5py.File(tmp, "w") as f:
        for case_id in case_ids:
            row, src = rows[case_id]
            with h5py.File(src / row["shard"], "r") as g:
                group = f.create_group(case_id)
                fresh = recompute(json.loads(g[case_id].attrs["case"])) if recompute else {}
                for name, value in g[case_id].items():
                    data = fresh[name] if name in fresh else value[()]
                    group.create_dataset(name, data=data, compression="gzip", shuffle=True)
                group.attrs.update(dict(g[case_id].attrs))
    write_csv_rows(out / MANIFEST, COLUMNS, [{**rows[case_id][0], "shard": shard} for case_id in case_ids])
    return out


def parse_seeds(text: str) -> list[int]:
    """``"0-11"`` or ``"0,3,5-7"`` -> list of ints (for the CLI)."""
    seeds = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        lo, dash, hi = part.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
        except ValueError:
            raise XsimInputError(f"seeds must look like '0-11' or '0,3,5-7', got {text!r}") from None
    check_range("seeds", seeds or [-1], 0)
    return seeds
