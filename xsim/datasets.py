"""Datasets at scale: many CTs x many views x settings, rendered in local processes or on a Dask cluster.

Owns the dataset spec (YAML, checked with line numbers before any work), the plan (the list of items,
each fully determined by the spec: views and noise seeds are drawn here, from ``seed`` and the item's
index, so an item is the same image whichever worker renders it), and :func:`run_dataset`.

Output folder::

    dataset.json        the spec's fingerprint (a rerun with another spec into the folder is refused)
    shard-*.h5          one HDF5 file per worker process (thread, on a threaded Dask worker); one group
                        per item, layout of :func:`xsim.imageio.write_rendering_group`
    manifest.csv        one row per finished item (item_id, shard, group, view, settings, seed, time)

Safety and resume: a worker writes an item's group and closes the shard before it reports back; the
manifest row is appended (and fsync'ed) only after that, so every manifest row points at a complete image.
A rerun reads the manifest, skips its items, deletes shard groups that have no manifest row (an item cut
short by the interruption) and renders the rest. Failures are reported with their reason and retried by
the next run.

Spec (YAML; paths relative to the spec file)::

    seed: 0
    sources: ["thorax:seed=1,voxel_mm=5,vessels=true", ct/patient1.nii.gz, phantoms/p2.h5]
    views: {per_source: 10, lao_deg: [-40, 40], cran_deg: [-25, 25],
            isocenter_mm: [0, 0, 0],          # or a phantom landmark name, e.g. heart_center
            isocenter_jitter_mm: 0}
    detector: {shape: [256, 256], pixel_mm: 1.2, sdd_mm: 1020, sid_mm: 760}
    settings: {kvp: [70, 90], mas: [0.1], filtration_mm: {Al: 3.0}, scatter: none, noise: true,
               readout: {blur_sigma_mm: 0.19, electronic_noise_keV: 40}}
    labels: {points: points.csv, mask_materials: [iodine contrast], phantom_landmarks: true}

Items: sources x kvp x mas x ``per_source`` views; angles drawn uniformly in the given ranges (a single
number fixes the angle).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

from .checks import XsimInputError, check_choice, check_positive, check_range
from .fileio import append_csv_row, atomic_path, write_csv_rows
from .physics.spectra import KVP_RANGE

__all__ = ["DatasetSpec", "DatasetSummary", "load_item", "load_spec", "read_manifest", "run_dataset", "run_tasks"]

MANIFEST = "manifest.csv"
FINGERPRINT = "dataset.json"
MANIFEST_COLUMNS = ["item_id", "shard", "group", "source", "lao_deg", "cran_deg", "kvp", "mas", "scatter",
                    "noise", "seed", "render_time_s"]
_TOP_KEYS = {"seed", "sources", "views", "detector", "settings", "labels", "out"}
_SECTION_KEYS = {
    "views": {"per_source", "lao_deg", "cran_deg", "isocenter_mm", "isocenter_jitter_mm"},
    "detector": {"shape", "pixel_mm", "sdd_mm", "sid_mm"},
    "settings": {"kvp", "mas", "filtration_mm", "scatter", "noise", "readout", "mc_photons"},
    "labels": {"points", "mask_materials", "phantom_landmarks"},
}


# --- the spec ----------------------------------------------------------------------------------------

_CONSTRUCTOR = yaml.constructor.SafeConstructor()  # YAML scalars -> Python values, as yaml.safe_load does


class _Located:
    """A parsed YAML document with the line of every field, for error messages."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines: dict[tuple, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise XsimInputError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
        if node is None or not isinstance(node, yaml.MappingNode):
            raise XsimInputError(f"{path}: a dataset spec must be a YAML mapping (seed, sources, views, ...)")
        self.data = self._convert(node, ())

    def _convert(self, node, path: tuple):
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                key = key_node.value
                out[key] = self._convert(value_node, path + (key,))
                self.lines[path + (key,)] = key_node.start_mark.line + 1  # the key's line, not its value's
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, path + (i,)) for i, item in enumerate(node.value)]
        return _CONSTRUCTOR.construct_object(node, deep=True)

    def error(self, path: tuple, message: str) -> XsimInputError:
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        name = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        return XsimInputError(f"{self.path}, line {line}: field '{name}': {message}")

    def check(self, path: tuple, func, *args, **kwargs):
        """Run a checks.py helper; re-raise its error with the field's name and line."""
        try:
            return func(*args, **kwargs)
        except XsimInputError as err:
            raise self.error(path, str(err)) from None


@dataclass
class DatasetSpec:
    """A checked dataset spec and its plan.

    Attributes
    ----------
    path : Path
        The spec file.
    out_dir : Path
        Where the dataset goes (``out`` in the spec, default ``<spec stem>-dataset`` beside it).
    items : list of dict
        One plain dict per image, everything a worker needs (see the module docstring).
    fingerprint : str
        SHA-256 of the plan.
    """

    path: Path
    out_dir: Path
    items: list[dict]
    fingerprint: str


def load_spec(path: str | os.PathLike) -> DatasetSpec:
    """Read and check a dataset spec, and plan its items (no rendering).

    Raises :class:`XsimInputError` naming the field and its line for a malformed spec, a missing CT or
    phantom file, a non-positive mAs or a kVp outside the tube spectra's range.
    """
    path = Path(path)
    if not path.is_file():
        raise XsimInputError(f"dataset spec {str(path)!r} does not exist")
    doc = _Located(path, path.read_text())
    data, base = doc.data, path.parent
    for key in data:
        if key not in _TOP_KEYS:
            doc.check((key,), check_choice, "field", key, sorted(_TOP_KEYS))
    for section, keys in _SECTION_KEYS.items():
        value = data.get(section, {})
        if not isinstance(value, dict):
            raise doc.error((section,), f"must be a mapping with fields {sorted(keys)}, got {value!r}")
        for key in value:
            if key not in keys:
                doc.check((section, key), check_choice, f"{section} field", key, sorted(keys))

    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise doc.error(("seed",), f"must be an integer >= 0, got {seed!r}")
    sources = _sources(doc, data.get("sources"), base)
    views, det, settings, labels = (data.get(k, {}) for k in ("views", "detector", "settings", "labels"))

    per_source = views.get("per_source", 1)
    if isinstance(per_source, bool) or not isinstance(per_source, int) or per_source < 1:
        raise doc.error(("views", "per_source"), f"must be an integer >= 1, got {per_source!r}")
    lao = _angle_range(doc, ("views", "lao_deg"), views.get("lao_deg", 0.0), 180.0)
    cran = _angle_range(doc, ("views", "cran_deg"), views.get("cran_deg", 0.0), 90.0)
    iso = views.get("isocenter_mm", [0.0, 0.0, 0.0])
    if not isinstance(iso, str):
        iso = _numbers(doc, ("views", "isocenter_mm"), iso, 3)
    jitter = doc.check(("views", "isocenter_jitter_mm"), check_range, "isocenter_jitter_mm",
                       _number(doc, ("views", "isocenter_jitter_mm"), views.get("isocenter_jitter_mm", 0.0)),
                       0.0, unit="mm")

    shape = det.get("shape", [256, 256])
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise doc.error(("detector", "shape"), f"must be [rows, cols], two positive integers, got {shape!r}")
    detector = {"shape": shape}
    for key, default in (("pixel_mm", 1.2), ("sdd_mm", 1020.0), ("sid_mm", 760.0)):
        value = _number(doc, ("detector", key), det.get(key, default))
        detector[key] = doc.check(("detector", key), check_positive, key, value, unit="mm")
    if detector["sid_mm"] >= detector["sdd_mm"]:
        raise doc.error(("detector", "sid_mm"), f"must be below sdd_mm={detector['sdd_mm']:g}, "
                                                f"got {detector['sid_mm']:g}")

    kvps = _list_of_numbers(doc, ("settings", "kvp"), settings.get("kvp", [80.0]))
    for i, kvp in enumerate(kvps):
        doc.check(("settings", "kvp", i), check_range, "kvp", kvp, *KVP_RANGE, unit="kV")
    mas_values = _list_of_numbers(doc, ("settings", "mas"), settings.get("mas", [1.0]))
    for i, mas in enumerate(mas_values):
        doc.check(("settings", "mas", i), check_positive, "mas", mas, unit="mAs")
    filtration = settings.get("filtration_mm", {"Al": 2.5})
    if not isinstance(filtration, dict):
        raise doc.error(("settings", "filtration_mm"), f"must map material to mm, got {filtration!r}")
    scatter = settings.get("scatter", "none")
    doc.check(("settings", "scatter"), check_choice, "scatter", scatter, ("cnn", "mc", "none"))
    noise = settings.get("noise", True)
    if not isinstance(noise, bool):
        raise doc.error(("settings", "noise"), f"must be true or false, got {noise!r}")
    readout = settings.get("readout", {})
    if not isinstance(readout, dict):
        raise doc.error(("settings", "readout"), f"must be a mapping of Readout parameters, got {readout!r}")
    from .readout import Readout

    try:
        Readout(**readout)
    except TypeError as err:
        raise doc.error(("settings", "readout"), str(err)) from None
    except XsimInputError as err:
        raise doc.error(("settings", "readout"), str(err)) from None
    mc_photons = _number(doc, ("settings", "mc_photons"), settings.get("mc_photons", 1e6))
    # the spectra are built once here so that a bad filtration fails before any work
    from .physics.spectra import Spectrum

    for kvp in kvps:
        doc.check(("settings", "filtration_mm"), Spectrum.tungsten, kvp, filtration)

    label_spec = {"points": None, "mask_materials": [], "phantom_landmarks": True}
    if labels.get("points") is not None:
        points = _existing(doc, ("labels", "points"), labels["points"], base)
        from .labels import read_points

        doc.check(("labels", "points"), read_points, points)
        label_spec["points"] = str(points)
    mats = labels.get("mask_materials", [])
    if not (isinstance(mats, list) and all(isinstance(m, str) for m in mats)):
        raise doc.error(("labels", "mask_materials"), f"must be a list of material names, got {mats!r}")
    label_spec["mask_materials"] = mats
    if not isinstance(labels.get("phantom_landmarks", True), bool):
        raise doc.error(("labels", "phantom_landmarks"), "must be true or false")
    label_spec["phantom_landmarks"] = labels.get("phantom_landmarks", True)

    out = data.get("out")
    out_dir = (base / out) if isinstance(out, str) else path.with_name(path.stem + "-dataset")
    items = []
    for s, source in enumerate(sources):
        for kvp in kvps:
            for mas in mas_values:
                for view in range(per_source):
                    index = len(items)
                    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
                    items.append({
                        "item_id": f"item{index:07d}", "source": source,
                        "lao_deg": float(rng.uniform(*lao)), "cran_deg": float(rng.uniform(*cran)),
                        "isocenter": iso, "jitter_mm": (rng.normal(size=3) * jitter).tolist(),
                        "detector": detector, "kvp": float(kvp), "mas": float(mas),
                        "filtration_mm": {str(k): float(v) for k, v in filtration.items()},
                        "scatter": scatter, "noise": noise, "readout": readout, "mc_photons": mc_photons,
                        "seed": int(rng.integers(0, 2**31 - 1)), "labels": label_spec,
                    })
    fingerprint = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
    return DatasetSpec(path=path, out_dir=out_dir, items=items, fingerprint=fingerprint)


def _sources(doc: _Located, sources, base: Path) -> list[str]:
    from .rendering import PROCEDURAL_PHANTOMS, procedural_spec

    if not isinstance(sources, list) or not sources:
        raise doc.error(("sources",), "must be a non-empty list of CT files, phantom .h5 files or procedural "
                                      f"phantoms ({', '.join(PROCEDURAL_PHANTOMS)}; e.g. 'thorax:seed=3'), "
                                      f"got {sources!r}")
    out = []
    for i, src in enumerate(sources):
        if not isinstance(src, str):
            raise doc.error(("sources", i), f"must be a path or a procedural phantom name, got {src!r}")
        if doc.check(("sources", i), procedural_spec, src) is not None:
            out.append(src)
        else:
            out.append(str(_existing(doc, ("sources", i), src, base, what="CT or phantom file")))
    return out


def _existing(doc: _Located, path: tuple, value, base: Path, what: str = "file") -> Path:
    if not isinstance(value, str):
        raise doc.error(path, f"must be a path, got {value!r}")
    p = Path(value) if Path(value).is_absolute() else base / value
    if not p.exists():
        raise doc.error(path, f"{what} {str(p)!r} does not exist")
    return p.resolve()


def _number(doc: _Located, path: tuple, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise doc.error(path, f"must be a number, got {value!r}")
    return float(value)


def _numbers(doc: _Located, path: tuple, value, n: int) -> list[float]:
    if not isinstance(value, list) or len(value) != n:
        raise doc.error(path, f"must be a list of {n} numbers, got {value!r}")
    return [_number(doc, path + (i,), v) for i, v in enumerate(value)]


def _list_of_numbers(doc: _Located, path: tuple, value) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise doc.error(path, "must not be empty")
    return [_number(doc, path + ((i,) if isinstance(value, list) else ()), v) for i, v in enumerate(values)]


def _angle_range(doc: _Located, path: tuple, value, limit: float) -> tuple[float, float]:
    lo, hi = (_numbers(doc, path, value, 2) if isinstance(value, list) else [_number(doc, path, value)] * 2)
    doc.check(path, check_range, path[-1], [lo, hi], -limit, limit, unit="deg")
    if lo > hi:
        raise doc.error(path, f"range [{lo:g}, {hi:g}] must have low <= high")
    return lo, hi


# --- one item (runs in a worker) ------------------------------------------------------------------------

@lru_cache(maxsize=2)
def _phantom(source: str):
    from .rendering import load_phantom

    return load_phantom(source)


@lru_cache(maxsize=8)
def _spectrum(kvp: float, filtration: tuple):
    from .physics.spectra import Spectrum

    return Spectrum.tungsten(kvp, dict(filtration))


def _shard_name() -> str:
    """One shard per process and thread: no two writers ever share an HDF5 file."""
    return f"shard-{socket.gethostname()}-{os.getpid()}-{threading.get_native_id()}.h5"


def render_item(item: dict, out_dir: str, threads: int | None = None) -> dict:
    """Render one planned item, store it in this worker's shard, and return its manifest row."""
    import h5py

    from .geometry import CArm
    from .imageio import write_rendering_group
    from .labels import LabelSpec
    from .readout import Readout
    from .rendering import render

    start = time.perf_counter()
    if item["scatter"] == "cnn" and threads is not None:
        import torch

        torch.set_num_threads(threads)  # the workers share the CPUs: no oversubscription by torch's own pool
    phantom = _phantom(item["source"])
    iso = item["isocenter"]
    if isinstance(iso, str):
        if iso not in phantom.landmarks:
            raise XsimInputError(f"isocenter_mm {iso!r} is not a landmark of {item['source']} "
                                 f"(landmarks: {sorted(phantom.landmarks)})")
        iso = phantom.landmarks[iso]
    det = item["detector"]
    camera = CArm(det["sdd_mm"], det["sid_mm"], tuple(det["shape"]), det["pixel_mm"]).view(
        item["lao_deg"], item["cran_deg"], isocenter_mm=np.asarray(iso, dtype=float) + item["jitter_mm"])
    lab = item["labels"]
    labels = LabelSpec(points=lab["points"], phantom_landmarks=lab["phantom_landmarks"],
                       mask_materials=lab["mask_materials"])
    rendering = render(phantom, camera, _spectrum(item["kvp"], tuple(sorted(item["filtration_mm"].items()))),
                       mas=item["mas"], scatter=item["scatter"], noise=item["noise"], seed=item["seed"],
                       readout=Readout(**item["readout"]), labels=labels, mc_photons=item["mc_photons"],
                       threads=threads)
    rendering.settings["item"] = item
    shard = _shard_name()
    with h5py.File(Path(out_dir) / shard, "a") as f:
        if item["item_id"] in f:  # left by an interrupted run whose process id this one reuses: replace it
            del f[item["item_id"]]
        write_rendering_group(f.create_group(item["item_id"]), rendering, compress_images=False)
        f.flush()
    row = {k: item[k] for k in ("item_id", "source", "lao_deg", "cran_deg", "kvp", "mas", "scatter", "noise",
                                "seed")}
    row.update(shard=shard, group=item["item_id"], render_time_s=time.perf_counter() - start)
    return row


# --- running a dataset ------------------------------------------------------------------------------------

@dataclass
class DatasetSummary:
    """What a run did. ``failures``: (item_id, reason) pairs; failed items are retried by the next run."""

    out_dir: Path
    total: int
    already_done: int
    rendered: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.rendered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def remaining(self) -> int:
        return self.total - self.already_done - self.rendered

    def __str__(self) -> str:
        lines = [f"dataset {self.out_dir}: {self.rendered} rendered in {self.elapsed_s:.1f} s "
                 f"({self.images_per_s:.2f} images/s), {self.already_done} already done, "
                 f"{len(self.failures)} failed, {self.remaining} of {self.total} remaining"]
        lines += [f"  FAILED {item_id}: {reason}" for item_id, reason in self.failures]
        return "\n".join(lines)


def run_dataset(spec: str | os.PathLike | DatasetSpec, out_dir: str | os.PathLike | None = None,
                scheduler: str | None = None, workers: int | None = None, max_items: int | None = None,
                progress: bool = True) -> DatasetSummary:
    """Render (or finish rendering) a dataset.

    Parameters
    ----------
    spec : path or DatasetSpec
        The YAML spec (see the module docstring), checked before any work.
    out_dir : path, optional
        Output folder (default: the spec's ``out``, else ``<spec stem>-dataset`` beside the spec).
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``); workers must see ``out_dir`` (shared file system).
    workers : int, optional
        Local worker processes (default: CPU count); 0 renders in this process. Ignored with ``scheduler``.
    max_items : int, optional
        Stop after this many items (the rest is left for the next run).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    DatasetSummary
    """
    plan = spec if isinstance(spec, DatasetSpec) else load_spec(spec)
    out = Path(out_dir) if out_dir is not None else plan.out_dir
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise XsimInputError(f"workers must be an integer >= 0, got {workers!r}")
    if max_items is not None and (not isinstance(max_items, int) or max_items < 0):
        raise XsimInputError(f"max_items must be an integer >= 0, got {max_items!r}")
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        return _run_locked(plan, out, scheduler, workers, max_items, progress)


@contextmanager
def _exclusive(out: Path):
    """Hold an advisory lock on the folder: two runs appending to one manifest would corrupt it."""
    import fcntl

    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise XsimInputError(f"another xsim dataset run is using {out}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_locked(plan: DatasetSpec, out: Path, scheduler: str | None, workers: int | None,
                max_items: int | None, progress: bool) -> DatasetSummary:
    from tqdm import tqdm

    _check_fingerprint(out, plan)
    done = _resume(out)
    todo = [item for item in plan.items if item["item_id"] not in done]
    pending = todo if max_items is None else todo[:max_items]
    summary = DatasetSummary(out_dir=out, total=len(plan.items), already_done=len(plan.items) - len(todo),
                             rendered=0)
    cpus = os.cpu_count() or 1
    n_workers = cpus if workers is None else workers
    start = time.perf_counter()
    bar = tqdm(total=len(pending), unit="image", disable=not progress, desc="xsim dataset")
    try:
        for item_id, row, error in run_tasks(render_item, pending, "item_id", out, n_workers, scheduler, cpus):
            if error is None:
                append_csv_row(out / MANIFEST, MANIFEST_COLUMNS, row)
                summary.rendered += 1
            else:
                summary.failures.append((item_id, error))
            bar.update(1)
    finally:
        bar.close()
        summary.elapsed_s = time.perf_counter() - start
    _resume(out)  # a task retried by Dask after a lost worker may have left a second copy: drop it
    if importlib.util.find_spec("pyarrow") is not None and (out / MANIFEST).exists():  # a Parquet copy
        table = read_manifest(out)
        with atomic_path(out / "manifest.parquet") as tmp:
            table.to_parquet(tmp)
    return summary


def run_tasks(fn, tasks: list[dict], id_key: str, out: Path, workers: int, scheduler: str | None = None,
              cpus: int | None = None):
    """Run ``fn(task, out_dir, threads)`` for every task; yield ``(task id, result or None, error or None)``
    as tasks finish. A task's exception is reported, never raised, so one failure does not stop the others.

    Parameters
    ----------
    fn : callable
        Module-level function (it is pickled to worker processes); ``threads`` is the kernel thread count
        it may use (None: its default).
    tasks : list of dict
        Picklable task descriptions; ``task[id_key]`` names each one.
    out : Path
        Output folder, passed to ``fn`` as a string.
    workers : int
        Local worker processes (spawned); 0 runs the tasks in this process.
    scheduler : str, optional
        Dask scheduler address (``tcp://host:8786``): run on that cluster instead of local processes.
    cpus : int, optional
        CPUs shared by the local workers (default: this machine's).
    """
    if not tasks:
        return
    if scheduler is not None:
        from dask.distributed import Client, as_completed as dask_completed

        with Client(scheduler) as client:
            futures = {client.submit(fn, task, str(out), None, pure=False,
                                     key=f"xsim-{task[id_key]}-{os.getpid()}"): task[id_key]
                       for task in tasks}
            for future in dask_completed(futures):
                yield _outcome(futures[future], future.result)
        return
    if workers == 0:
        for task in tasks:
            yield _outcome(task[id_key], lambda task=task: fn(task, str(out), None))
        return
    threads = max(1, (cpus or os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, task, str(out), threads): task[id_key] for task in tasks}
        try:
            for future in as_completed(futures):
                yield _outcome(futures[future], future.result)
        finally:
            for future in futures:
                future.cancel()


def _outcome(task_id: str, result) -> tuple[str, dict | None, str | None]:
    try:
        return task_id, result(), None
    except Exception as err:  # a task's failure is reported and retried next run; it must not stop the others
        return task_id, None, f"{type(err).__name__}: {err}"


def _check_fingerprint(out: Path, plan: DatasetSpec) -> None:
    path = out / FINGERPRINT
    if path.exists():
        recorded = json.loads(path.read_text()).get("fingerprint")
        if recorded != plan.fingerprint:
            raise XsimInputError(f"{out} holds another dataset (its plan differs from {plan.path}); "
                                 "use a new output folder")
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"fingerprint": plan.fingerprint, "spec": str(plan.path),
                                   "items": len(plan.items)}, indent=1))


def _resume(out: Path) -> set[str]:
    """Finished item ids; drops shard groups without a manifest row and manifest rows without a group."""
    rows = read_manifest(out).to_dict("records") if (out / MANIFEST).exists() else []
    return {r["item_id"] for r in prune_shards(out, rows, "group", out / MANIFEST, MANIFEST_COLUMNS)}


def prune_shards(out: Path, rows: list[dict], group_key: str, manifest: Path, columns: list[str]) -> list[dict]:
    """Reconcile a folder of HDF5 shards (``shard-*.h5``) with the rows of its CSV manifest after an
    interruption: the rows whose group (``row[group_key]`` in shard ``row["shard"]``) exists are kept, the
    shard groups no kept row names are deleted, and ``manifest`` is rewritten (with ``columns``) if rows were
    dropped. Returns the kept rows."""
    import h5py

    stored: dict[str, set[str]] = {}
    for shard in sorted(out.glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            stored[shard.name] = set(f.keys())
    valid = [r for r in rows if r[group_key] in stored.get(r["shard"], set())]
    keep: dict[str, set[str]] = {}
    for r in valid:
        keep.setdefault(r["shard"], set()).add(r[group_key])
    for shard, groups in stored.items():
        orphans = groups - keep.get(shard, set())
        if orphans:
            with h5py.File(out / shard, "a") as f:
                for group in orphans:
                    del f[group]
    if len(valid) != len(rows):
        write_csv_rows(manifest, columns, valid)
    return valid


def read_manifest(out_dir: str | os.PathLike):
    """The manifest as a pandas DataFrame (rows cut short by a crash are dropped)."""
    import pandas as pd

    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise XsimInputError(f"{out_dir} has no {MANIFEST}: not a dataset folder, or nothing finished yet")
    table = pd.read_csv(path, dtype={"item_id": str, "shard": str, "group": str})
    return table.dropna(subset=["item_id", "shard", "group", "render_time_s"]).reset_index(drop=True)


def load_item(out_dir: str | os.PathLike, item_id: str) -> dict:
    """One stored item: arrays, masks, landmarks, settings and camera (:func:`xsim.imageio.read_rendering_group`)."""
    import h5py

    from .imageio import read_rendering_group

    table = read_manifest(out_dir)
    row = table[table["item_id"] == item_id]
    if row.empty:
        raise XsimInputError(f"item {item_id!r} is not in the manifest of {out_dir}")
    with h5py.File(Path(out_dir) / row["shard"].iloc[0], "r") as f:
        return read_rendering_group(f[row["group"].iloc[0]])
