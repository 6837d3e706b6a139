"""Images per second of realistic 512 x 512 renders (primary + CNN scatter + noise + readout + labels) of a
~256^3 phantom, in one process and as a dataset run with 1 and 2 worker processes. Prints a table.

    /work/venv/bin/python benchmarks/bench_render.py [--images 24] [--voxel-mm 1.25] [--bin-kev 0.5 2]

Phantom: ``xsim.phantoms.thorax(voxel_mm=1.25, vessels=True, tool=True)`` (320 x 240 x 256 voxels, 10
materials). Camera: C-arm SDD 1020 mm, SID 760 mm, 512 x 512 pixels of 0.6 mm, angles drawn in LAO +-40,
CRAN +-25. Spectrum: tungsten 80 kVp, 2.5 mm Al, at the given bin widths (the projector's cost grows with
the number of energy bins). Scatter "cnn": the shipped scatter model (``xsim.scatter.predict``).

Rows:
- ``render()``: steady-state calls in this process (phantom built once), with the stage times
  (projection, scatter CNN, readout, labels = phantom landmarks + contrast and wire masks);
- ``dataset run``: ``xsim.datasets.run_dataset`` end to end (worker start, phantom build in each worker,
  HDF5 shard and manifest writes included), 1 and 2 local worker processes; and its steady state, the
  workers divided by the median time per item in a worker (render and shard write, from the manifest).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import xsim
from xsim.datasets import read_manifest, run_dataset
from xsim.labels import LabelSpec, make_labels
from xsim.projector import project
from xsim.readout import Readout, spectral_spread_factor
from xsim.rendering import render
from xsim.scatter import predict

SPEC = """\
seed: 0
sources: ["thorax:seed=0,voxel_mm={voxel_mm},vessels=true,tool=true"]
views: {{per_source: {images}, lao_deg: [-40, 40], cran_deg: [-25, 25]}}
detector: {{shape: [512, 512], pixel_mm: 0.6}}
settings: {{kvp: [80], mas: [0.2], filtration_mm: {{Al: 2.5}}, scatter: cnn, noise: true}}
labels: {{mask_materials: [iodine contrast, stainless steel]}}
"""


def _in_process(phantom, spectrum, images: int) -> dict:
    carm = xsim.CArm(detector_shape=(512, 512), pixel_mm=0.6)
    rng = np.random.default_rng(0)
    cams = [carm.view(rng.uniform(-40, 40), rng.uniform(-25, 25)) for _ in range(images + 1)]
    labels = LabelSpec(mask_materials=["iodine contrast", "stainless steel"])
    render(phantom, cams[0], spectrum, mas=0.2, scatter="cnn", labels=labels)  # warm-up: kernel, CNN weights
    start = time.perf_counter()
    for i, cam in enumerate(cams[1:]):
        render(phantom, cam, spectrum, mas=0.2, scatter="cnn", labels=labels, seed=i)
    total = time.perf_counter() - start
    stages = dict.fromkeys(("projection_s", "scatter_s", "readout_s", "labels_s"), 0.0)
    readout, k = Readout(), spectral_spread_factor(spectrum, xsim.detector.Detector())
    for i, cam in enumerate(cams[1:3]):  # stage breakdown on two views
        t0 = time.perf_counter()
        proj = project(phantom, cam, spectrum=spectrum, photons=True)
        t1 = time.perf_counter()
        scatter = predict(proj, spectrum)
        t2 = time.perf_counter()
        readout.read((proj.primary + scatter) * 0.2, proj.photons * 0.2, cam.pixel_mm, np.random.default_rng(i), k)
        t3 = time.perf_counter()
        make_labels(labels, phantom, cam, projection=proj)
        t4 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[key] += dt / 2
    return {"images_per_s": images / total, "s_per_image": total / images, **stages}


def _dataset(voxel_mm: float, images: int, workers: int, bin_keV: float) -> tuple[float, float]:
    """(end-to-end images/s of a run of ``images``, steady-state images/s): the steady state is ``workers``
    divided by the median time a worker spends per item (render + shard write, as the manifest records it;
    the median leaves out each worker's first item, which also builds the phantom)."""
    if bin_keV != 0.5:
        return float("nan"), float("nan")  # dataset specs use the default 0.5 keV spectra
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(SPEC.format(voxel_mm=voxel_mm, images=images))
        summary = run_dataset(spec, out_dir=Path(tmp) / "out", workers=workers, progress=False)
        if summary.failures:
            raise RuntimeError(f"benchmark items failed: {summary.failures}")
        per_item_s = float(read_manifest(Path(tmp) / "out")["render_time_s"].median())
    return summary.images_per_s, workers / per_item_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--voxel-mm", type=float, default=1.25)
    parser.add_argument("--bin-kev", type=float, nargs="+", default=[0.5, 2.0])
    args = parser.parse_args()
    phantom = xsim.phantoms.thorax(seed=0, voxel_mm=args.voxel_mm, vessels=True, tool=True)
    print(f"phantom {phantom!r}, {np.prod(phantom.shape) / 1e6:.1f} M voxels; 512 x 512, {args.images} images")
    print(f"{'spectrum bins':>14} {'render() img/s':>15} {'s/img':>7} {'project s':>10} {'CNN s':>7} "
          f"{'readout s':>10} {'labels s':>9} {'dataset 1 wkr':>14} {'dataset 2 wkr':>14} {'steady 1 wkr':>13} "
          f"{'steady 2 wkr':>13}")
    for bin_keV in args.bin_kev:
        spectrum = xsim.Spectrum.tungsten(80.0, {"Al": 2.5}, bin_keV=bin_keV)
        bins = int(np.count_nonzero(spectrum.fluence))
        r = _in_process(phantom, spectrum, args.images)
        d1, s1 = _dataset(args.voxel_mm, args.images, 1, bin_keV)
        d2, s2 = _dataset(args.voxel_mm, args.images, 2, bin_keV)
        print(f"{bins:>6} ({bin_keV:g} keV) {r['images_per_s']:>15.2f} {r['s_per_image']:>7.2f} "
              f"{r['projection_s']:>10.3f} {r['scatter_s']:>7.3f} {r['readout_s']:>10.3f} {r['labels_s']:>9.3f} "
              f"{d1:>14.2f} {d2:>14.2f} {s1:>13.2f} {s2:>13.2f}")
    print("target: >= 5 images/s (issue 7); dataset columns: end to end for --images images (worker start-up and "
          "phantom build in each worker included), and steady state (workers / median time per item); 0.5 keV "
          "spectra")


if __name__ == "__main__":
    main()
