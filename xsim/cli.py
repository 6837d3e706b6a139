"""The ``xsim`` command line: a thin layer over the Python API (each command parses its
arguments and calls one public function)."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .checks import XsimInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xsim",
        description="X-ray simulation from CT: reference Monte Carlo, learned scatter, fast rendering.",
    )
    parser.add_argument("--version", action="version", version=f"xsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show versions, physics tables and kernel backends")
    info.set_defaults(func=_cmd_info)

    selftest = sub.add_parser("selftest", help="run the kernel runtime's known-answer and statistics checks")
    selftest.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda"])
    selftest.set_defaults(func=_cmd_selftest)

    phantom = sub.add_parser("phantom", help="build a seeded procedural phantom and save it (HDF5)")
    phantom.add_argument("kind", choices=["thorax", "abdomen", "pelvis", "head"])
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--voxel-mm", type=float, default=2.0)
    phantom.add_argument("--vessels", action="store_true", help="contrast-filled vessels")
    phantom.add_argument("--tool", action="store_true", help="a metal guidewire")
    phantom.add_argument("--out", required=True, help="output .h5 file")
    phantom.set_defaults(func=_cmd_phantom)

    ct2phantom = sub.add_parser("ct2phantom", help="convert a CT (NIfTI, DICOM folder, NRRD, npz) to a phantom")
    ct2phantom.add_argument("ct")
    ct2phantom.add_argument("--out", required=True, help="output .h5 file")
    ct2phantom.set_defaults(func=_cmd_ct2phantom)

    validate = sub.add_parser(
        "validate",
        help="run physics validation studies (each writes a CSV table and a PNG plot)",
        description="Run validation studies from validation/. Without a study name, run all of them.",
    )
    validate.add_argument("study", nargs="*", help="study names (default: all); see --list")
    validate.add_argument("--quick", action="store_true", help="the fast version used by the tests")
    validate.add_argument("--out", default="xsim-validation", help="output folder (default: %(default)s)")
    validate.add_argument("--list", action="store_true", help="list the studies and exit")
    validate.set_defaults(func=_cmd_validate)

    demo = sub.add_parser("demo", help="render the built-in thorax phantom to a PNG (no data needed)")
    demo.add_argument("--out", default="xsim-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    render = sub.add_parser("render", help="render one realistic image (PNG preview, float32 TIFF, HDF5)")
    _add_view_arguments(render, shape=(512, 512), pixel_mm=0.6)
    render.add_argument("--kvp", type=float, default=80.0)
    render.add_argument("--al-mm", type=float, default=2.5, help="total aluminium filtration, mm")
    render.add_argument("--mas", type=float, default=1.0)
    render.add_argument("--scatter", default="none", choices=["cnn", "mc", "none"])
    render.add_argument("--no-noise", action="store_true")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--bits", type=int, default=8, choices=[8, 16], help="PNG preview depth")
    render.add_argument("--out", required=True, help="output prefix: writes PREFIX.png, .tiff and .h5")
    render.set_defaults(func=_cmd_render)

    mc = sub.add_parser("mc", help="Monte Carlo reference images and dose of one view (HDF5)")
    _add_view_arguments(mc, shape=(128, 128), pixel_mm=2.4)
    beam = mc.add_mutually_exclusive_group()
    beam.add_argument("--kvp", type=float, default=80.0, help="tungsten tube potential, kV (default: %(default)s)")
    beam.add_argument("--energy-kev", type=float, help="monoenergetic beam instead of a tube spectrum")
    mc.add_argument("--al-mm", type=float, default=2.5, help="total aluminium filtration, mm")
    mc.add_argument("--photons", type=float, default=1e7, help="histories (default: %(default)g)")
    mc.add_argument("--seed", type=int, default=0)
    mc.add_argument("--batches", type=int, default=10, help="batches for the uncertainties")
    mc.add_argument("--air", action="store_true", help="transport in air around the phantom")
    mc.add_argument("--out", required=True, help="output .h5 file")
    mc.set_defaults(func=_cmd_mc)

    dataset = sub.add_parser("dataset", help="render datasets from a YAML spec")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    run = dataset_sub.add_parser("run", help="render (or resume) a dataset spec")
    run.add_argument("spec", metavar="SPEC.yaml")
    run.add_argument("--out", help="output folder (default: the spec's 'out')")
    run.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    run.add_argument("--workers", type=int, help="local worker processes (default: CPU count; 0: in process)")
    run.add_argument("--max-items", type=int, help="stop after this many items")
    run.set_defaults(func=_cmd_dataset_run)

    scatter = sub.add_parser("scatter", help="learned scatter: Monte Carlo training data, CNN training, evaluation")
    scatter_sub = scatter.add_subparsers(dest="scatter_command", metavar="ACTION", required=True)
    make = scatter_sub.add_parser("make-dataset", help="simulate (or resume) Monte Carlo scatter cases")
    make.add_argument("--out", required=True, help="dataset folder")
    make.add_argument("--seeds", default="0-9", help="phantom seeds, e.g. 0-9 or 100,101 (default: %(default)s)")
    make.add_argument("--kinds", nargs="+", default=["thorax", "abdomen", "pelvis", "head"])
    make.add_argument("--views", type=int, default=3, help="views per phantom (default: %(default)s)")
    make.add_argument("--photons", type=float, default=5e6, help="histories per case (default: %(default)g)")
    make.add_argument("--seed", type=int, default=0, help="plan seed (views, kVp, filtration, MC seeds)")
    make.add_argument("--split", default="train", help="label of the cases (default: %(default)s)")
    make.add_argument("--kvp-range", nargs=2, type=float, default=[60.0, 120.0], metavar=("MIN", "MAX"),
                      help="tube voltages drawn uniformly in [MIN, MAX] kV (default: 60 120)")
    make.add_argument("--kvp-values", type=_kv_list, default=None,
                      metavar="KV,KV,...", help="instead, these voltages in turn over the cases in plan order")
    make.add_argument("--varied", type=int, default=None, metavar="N",
                      help="instead of --seeds/--kinds/--views: N cases of random bodies and procedural phantoms over "
                           "C-arm geometries, grids, views and beams (xsim.scatter.data.plan_varied_cases)")
    make.add_argument("--body-fraction", type=float, default=0.6, help="with --varied: share of random bodies "
                                                                       "(default: %(default)s)")
    make.add_argument("--workers", type=int, default=2, help="local processes (default: %(default)s)")
    make.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786): simulate on that cluster; "
                                          "its workers must see --out")
    make.set_defaults(func=_cmd_scatter_make_dataset)
    train = scatter_sub.add_parser("train", help="train the scatter CNN on a dataset folder")
    train.add_argument("data", nargs="+", help="training dataset folder(s)")
    train.add_argument("--out", required=True, help="model file (.pt)")
    train.add_argument("--epochs", type=int, default=120)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--width", type=int, default=16, help="U-Net channels of the first level")
    train.add_argument("--val-seeds", default=None,
                       help="phantom seeds kept out of the fit for model selection, e.g. 19,29 (default: the largest)")
    train.set_defaults(func=_cmd_scatter_train)
    evaluate = scatter_sub.add_parser("evaluate", help="errors of the CNN vs Monte Carlo on held-out cases")
    evaluate.add_argument("data", help="held-out dataset folder")
    evaluate.add_argument("--model", help="model file (default: the shipped model)")
    evaluate.add_argument("--out", default="xsim-scatter-eval", help="output folder (default: %(default)s)")
    evaluate.set_defaults(func=_cmd_scatter_evaluate)
    return parser


def _add_view_arguments(parser: argparse.ArgumentParser, shape: tuple[int, int], pixel_mm: float) -> None:
    """The phantom and C-arm view arguments shared by ``render`` and ``mc`` (read by :func:`_view`)."""
    parser.add_argument("source", metavar="CT_OR_PHANTOM",
                        help="CT file/folder, phantom .h5, or a procedural phantom such as thorax:seed=3")
    parser.add_argument("--lao", type=float, default=0.0, help="LAO (>0) / RAO (<0) angle, deg")
    parser.add_argument("--cran", type=float, default=0.0, help="CRAN (>0) / CAUD (<0) angle, deg")
    parser.add_argument("--isocenter", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"),
                        help="isocenter, patient LPS mm")
    parser.add_argument("--shape", type=int, nargs=2, default=shape, metavar=("ROWS", "COLS"))
    parser.add_argument("--pixel-mm", type=float, default=pixel_mm)


def _view(args: argparse.Namespace):
    """(phantom, camera) from the arguments of :func:`_add_view_arguments`."""
    from .geometry import CArm
    from .rendering import load_phantom

    camera = CArm(detector_shape=tuple(args.shape), pixel_mm=args.pixel_mm).view(
        args.lao, args.cran, isocenter_mm=args.isocenter)
    return load_phantom(args.source), camera


def _cmd_info(args: argparse.Namespace) -> int:
    from .paths import cache_dir, kernels_dir, physics_data_dir

    print(f"xsim {__version__}")
    print(f"physics tables: {physics_data_dir()}")
    print(f"kernel sources: {kernels_dir()}")
    from . import runtime
    from . import runtime_build
    from .runtime_build import cpu_build_flags

    print(f"kernel backend: {runtime.select_backend()} (XSIM_BACKEND), CPU threads: {runtime.default_threads()}")
    print(f"kernel cache:   {cache_dir()}")
    try:
        print(f"CPU build:      {' '.join(cpu_build_flags())} (XSIM_MARCH_NATIVE, XSIM_OPENMP)")
    except (runtime.BackendUnavailableError, runtime_build.KernelCompileError) as err:
        print(f"CPU build:      unavailable ({err})")
    return 0


def _cmd_selftest(args: argparse.Namespace) -> int:
    from .runtime_selftest import selftest

    results = selftest(args.backend)
    for check, passed in results.items():
        print(f"{'PASS' if passed else 'FAIL'}  {check}")
    failed = sum(not passed for passed in results.values())
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from . import phantoms

    build = getattr(phantoms, args.kind)
    phantom = build(seed=args.seed, voxel_mm=args.voxel_mm, vessels=args.vessels, tool=args.tool)
    path = phantom.save(args.out)
    print(f"wrote {path}: {phantom!r}")
    return 0


def _cmd_ct2phantom(args: argparse.Namespace) -> int:
    from .volume import load_ct

    phantom = load_ct(args.ct).to_phantom()
    path = phantom.save(args.out)
    print(f"wrote {path}: {phantom!r}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .validate import list_studies, run_studies

    if args.list:
        for name, summary in list_studies().items():
            print(f"{name:28s} {summary}")
        return 0
    results = run_studies(args.study or None, out_dir=args.out, quick=args.quick)
    failed = [name for name, passed in results.items() if not passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .rendering import demo

    paths = demo(args.out, seed=args.seed)
    print("\n".join(f"wrote {path}" for path in paths.values()))
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .physics.spectra import Spectrum
    from .rendering import render

    phantom, camera = _view(args)
    spectrum = Spectrum.tungsten(args.kvp, {"Al": args.al_mm})
    rendering = render(phantom, camera, spectrum, mas=args.mas, scatter=args.scatter, noise=not args.no_noise,
                       seed=args.seed)
    for path in rendering.save(args.out, bits=args.bits).values():
        print(f"wrote {path}")
    return 0


def _cmd_mc(args: argparse.Namespace) -> int:
    from .montecarlo import monte_carlo
    from .physics.spectra import Spectrum

    phantom, camera = _view(args)
    spectrum = None if args.energy_kev else Spectrum.tungsten(args.kvp, {"Al": args.al_mm})
    result = monte_carlo(phantom, camera, spectrum=spectrum, energy_keV=args.energy_kev, photons=args.photons,
                         seed=args.seed, batches=args.batches, world_material="air" if args.air else None)
    print(f"wrote {result.save(args.out)}: {result!r}")
    return 0


def _cmd_dataset_run(args: argparse.Namespace) -> int:
    from .datasets import run_dataset

    summary = run_dataset(args.spec, out_dir=args.out, scheduler=args.scheduler, workers=args.workers,
                          max_items=args.max_items)
    print(summary)
    return 1 if summary.failures else 0


def _kv_list(text: str) -> list[float]:
    """``--kvp-values 60,80,100`` -> [60.0, 80.0, 100.0]."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated voltages in kV such as 60,80,100, got {text!r}")


def _cmd_scatter_make_dataset(args: argparse.Namespace) -> int:
    from .scatter.data import make_dataset, parse_seeds, plan_cases, plan_varied_cases

    if args.varied is not None:
        cases = plan_varied_cases(args.varied, photons=args.photons, seed=args.seed, split=args.split,
                                  body_fraction=args.body_fraction, kvp_range=args.kvp_range)
    else:
        cases = plan_cases(parse_seeds(args.seeds), kinds=args.kinds, views=args.views, photons=args.photons,
                           seed=args.seed, split=args.split, kvp_range=args.kvp_range, kvp_values=args.kvp_values)
    summary = make_dataset(args.out, cases, workers=args.workers, scheduler=args.scheduler)
    print(f"{args.out}: {summary['simulated']} simulated in {summary['elapsed_s']:.0f} s, {summary['done']} already "
          f"done, {len(summary['failed'])} failed" + "".join(f"\n  FAILED {c}: {e}" for c, e in summary["failed"]))
    return 1 if summary["failed"] else 0


def _cmd_scatter_train(args: argparse.Namespace) -> int:
    from .scatter.data import parse_seeds
    from .scatter.train import train

    val_seeds = None if args.val_seeds is None else parse_seeds(args.val_seeds)
    model, history = train(args.data, args.out, val_seeds=val_seeds, epochs=args.epochs, seed=args.seed,
                           threads=args.threads, batch_size=args.batch_size, width=args.width)
    print(f"wrote {args.out}: {model.n_parameters()} parameters, {history['time_s']:.0f} s, best epoch "
          f"{history['best_epoch']}, validation loss {min(history['val_loss']):.4g}")
    return 0


def _cmd_scatter_evaluate(args: argparse.Namespace) -> int:
    from .scatter.evaluate import evaluate

    result = evaluate(args.data, model=args.model, out_dir=args.out)
    print(result["summary"].to_string(float_format=lambda v: f"{v:.4f}"))
    print("\n".join(f"wrote {path}" for path in result["files"].values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except XsimInputError as err:  # bad input: one clear line, no traceback
        print(f"xsim {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
