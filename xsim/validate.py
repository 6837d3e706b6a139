"""Discovery and running of the physics validation studies in ``validation/``.

Each study is a module of the ``validation/`` folder (shipped as ``xsim.validation``) with a
``main(out_dir, quick=False) -> bool`` function that writes a CSV table and a PNG plot and returns
whether it passed; its module docstring's first line is its summary.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from .checks import check_choice

_PACKAGE = "xsim.validation"


def list_studies() -> dict[str, str]:
    """Study name -> one-line summary, for every module in validation/ that has a ``main``."""
    package = importlib.import_module(_PACKAGE)
    studies = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_PACKAGE}.{info.name}")
        if callable(getattr(module, "main", None)):
            doc = (module.__doc__ or "").strip().splitlines()
            studies[info.name] = doc[0] if doc else ""
    return studies


def run_studies(names: list[str] | None = None, out_dir: str | Path = "xsim-validation",
                quick: bool = False) -> dict[str, bool]:
    """Run validation studies and return name -> passed.

    Parameters
    ----------
    names : list of str, optional
        Studies to run (default: all, in alphabetical order).
    out_dir : path
        Folder for the tables and plots; each study writes into ``out_dir/<name>/``.
    quick : bool
        Run the fast versions (fewer photons / cases).
    """
    available = list_studies()
    for name in names or []:
        check_choice("study", name, available)
    results = {}
    for name in names or list(available):
        module = importlib.import_module(f"{_PACKAGE}.{name}")
        results[name] = bool(module.main(out_dir=Path(out_dir) / name, quick=quick))
    return results


def save_table(table, path: str | Path, float_format: str = "%.6g", index: bool = False) -> Path:
    """Write a study's pandas table as CSV (default 6 significant digits; ``index``: with its row labels),
    atomically."""
    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index, float_format=float_format)
    return Path(path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write a study's matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def overall_verdict(table, claim: str) -> bool:
    """Print ``PASS: claim`` when every row of the study's table has status PASS, else ``FAIL: claim``
    (after a blank line); return whether it passed."""
    passed = bool((table.status == "PASS").all())
    print(f"\n{'PASS' if passed else 'FAIL'}: {claim}")
    return passed


def study_cli(main, description: str, default_out: str | Path, quick_help: str = "the fast version") -> None:
    """Command line of a study run as a script: ``--out DIR --quick``; exits 0 on PASS, 1 on FAIL."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args()
    raise SystemExit(0 if main(out_dir=args.out, quick=args.quick) else 1)
