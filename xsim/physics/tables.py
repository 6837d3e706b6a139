"""Element physics tables: reads ``physics_data/elements.h5`` and interpolates it.

Owns the run-time access to the per-element data written by ``physics_data/build_tables.py``
(xraylib is never imported here): mass cross sections and mu_en/rho on 1-200 keV, the atomic form
factor F(x, Z) and incoherent scattering function S(x, Z), atomic weights, symbols and edges.
The file is read once per process (about 20 ms) and cached.

Interpolation is log-log between table nodes. Each absorption edge is stored as two nodes at the
same energy (below, above); exactly at an edge energy the above-edge value is returned.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..checks import XsimInputError, check_choice, check_range
from ..paths import physics_data_dir

FORMAT_VERSION = 1
ENERGY_MIN_KEV = 1.0
ENERGY_MAX_KEV = 200.0
KINDS = ("total", "rayleigh", "compton", "photoelectric")
_REGENERATE = "python physics_data/build_tables.py (needs the 'tables' extra: pip install xraylib)"


@dataclass(frozen=True)
class ElementTables:
    """Everything in ``elements.h5``, as numpy arrays (read-only views; index = Z - 1).

    Energy tables use a compressed layout: element Z owns ``energy_keV[offsets[Z-1]:offsets[Z]]``
    and the same slice of every array in ``cross_sections`` (cm^2/g; keys: total, rayleigh,
    compton, photoelectric, mu_en). ``form_factor`` and ``scattering_function`` are (92, n_x) on
    ``x_per_angstrom`` (x = sin(theta/2)/lambda, 1/Angstrom; x[0] = 0).
    """

    path: Path
    attrs: dict
    symbols: tuple[str, ...]
    atomic_weight_g_mol: np.ndarray
    density_g_cm3: np.ndarray
    offsets: np.ndarray
    energy_keV: np.ndarray
    cross_sections: dict[str, np.ndarray]
    x_per_angstrom: np.ndarray
    form_factor: np.ndarray
    scattering_function: np.ndarray
    edges: dict[str, np.ndarray]
    checks: dict[str, np.ndarray]
    scatter_checks: dict[str, np.ndarray]

    def element_slice(self, Z: int) -> slice:
        """Slice of the energy arrays that belongs to element ``Z``."""
        return slice(int(self.offsets[Z - 1]), int(self.offsets[Z]))


def _read_group(group: h5py.Group) -> dict[str, np.ndarray]:
    return {k: v[()] for k, v in group.items() if isinstance(v, h5py.Dataset)}


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=None)
def load_tables(path: str | Path | None = None) -> ElementTables:
    """Read the element tables (once per path; later calls return the cached object).

    Parameters
    ----------
    path : str or Path, optional
        HDF5 file; default ``physics_data/elements.h5`` shipped with xsim.

    Raises
    ------
    XsimInputError
        If the file is missing or has a ``format_version`` this xsim does not read; the message
        says how to regenerate it.
    """
    path = Path(path) if path is not None else physics_data_dir() / "elements.h5"
    if not path.is_file():
        raise XsimInputError(f"physics table {path} not found; regenerate it with {_REGENERATE}")
    with h5py.File(path, "r") as f:
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise XsimInputError(
                f"physics table {path} has format_version {version}, this xsim reads "
                f"{FORMAT_VERSION}; regenerate it with {_REGENERATE}"
            )
        el = f["elements"]
        en = f["energy"]
        sc = f["scatter"]
        ck = f["checks"]
        cross = {k: _readonly(en[k][()]) for k in (*KINDS, "mu_en")}
        return ElementTables(
            path=path,
            attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()},
            symbols=tuple(s.decode() for s in el["symbol"][()]),
            atomic_weight_g_mol=_readonly(el["atomic_weight_g_mol"][()]),
            density_g_cm3=_readonly(el["density_g_cm3"][()]),
            offsets=_readonly(en["offsets"][()]),
            energy_keV=_readonly(en["energy_keV"][()]),
            cross_sections=cross,
            x_per_angstrom=_readonly(sc["x_per_angstrom"][()]),
            form_factor=_readonly(sc["form_factor"][()]),
            scattering_function=_readonly(sc["scattering_function"][()]),
            edges=_read_group(f["edges"]),
            checks=_read_group(ck),
            scatter_checks=_read_group(ck["scatter"]),
        )


# ------------------------------------------------------------------------------------------------
def atomic_number(element: int | str) -> int:
    """Atomic number of ``element`` (a Z in 1..92 or a symbol such as "Ca", case-insensitive)."""
    tables = load_tables()
    if isinstance(element, (int, np.integer)) and not isinstance(element, bool):
        if 1 <= int(element) <= len(tables.symbols):
            return int(element)
        raise XsimInputError(f"atomic number must lie in [1, {len(tables.symbols)}], got {element}")
    if isinstance(element, str):
        lookup = {s.lower(): z for z, s in enumerate(tables.symbols, start=1)}
        z = lookup.get(element.strip().lower())
        if z is None:
            check_choice("element symbol", element, tables.symbols)
        return z
    raise XsimInputError(f"element must be an atomic number or a symbol, got {element!r}")


def symbol(Z: int | str) -> str:
    """Chemical symbol of element ``Z`` (e.g. 53 -> "I")."""
    return load_tables().symbols[atomic_number(Z) - 1]


def atomic_weight(Z: int | str) -> float:
    """Standard atomic weight of element ``Z`` in g/mol (IUPAC values as used by NIST SRD 126)."""
    return float(load_tables().atomic_weight_g_mol[atomic_number(Z) - 1])


def element_density(Z: int | str) -> float:
    """Density of the pure element ``Z`` in g/cm^3 (xraylib ``ElementDensity``)."""
    return float(load_tables().density_g_cm3[atomic_number(Z) - 1])


def edges(Z: int | str) -> list[tuple[str, float]]:
    """Absorption edges of element ``Z`` in the table range: list of (shell, energy in keV)."""
    tables = load_tables()
    z = atomic_number(Z)
    sel = tables.edges["Z"] == z
    return [(s.decode(), float(e)) for s, e in zip(tables.edges["shell"][sel],
                                                     tables.edges["energy_keV"][sel])]


# ------------------------------------------------------------------------------------------------
def check_energy(energy_keV) -> np.ndarray:
    """Energies as a float array, raising XsimInputError outside [1, 200] keV."""
    check_range("energy_keV", energy_keV, ENERGY_MIN_KEV, ENERGY_MAX_KEV, unit="keV")
    return np.asarray(energy_keV, dtype=float)


def loglog_interp(x_new: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log y linear in log x between nodes; duplicate nodes (edges): the upper one wins.

    ``x`` ascending and positive, ``x_new`` inside [x[0], x[-1]], ``y`` > 0.
    """
    j = np.clip(np.searchsorted(x, x_new, side="right"), 1, len(x) - 1)
    x0, x1 = x[j - 1], x[j]
    ly0, ly1 = np.log(y[j - 1]), np.log(y[j])
    t = np.log(x_new / x0) / np.log(x1 / x0)
    return np.exp(ly0 + t * (ly1 - ly0))


def _scalar_or_array(values: np.ndarray, like) -> float | np.ndarray:
    return float(values) if np.ndim(like) == 0 else values


def mu_over_rho_element(Z: int | str, energy_keV, kind: str = "total") -> float | np.ndarray:
    """Mass attenuation coefficient of element ``Z`` in cm^2/g.

    Parameters
    ----------
    Z : int or str
        Atomic number or symbol.
    energy_keV : float or array_like
        Photon energies in keV, within [1, 200].
    kind : {"total", "rayleigh", "compton", "photoelectric"}
        Interaction; "total" includes coherent scattering.
    """
    check_choice("kind", kind, KINDS)
    return _interp_energy(Z, energy_keV, kind)


def mu_en_over_rho_element(Z: int | str, energy_keV) -> float | np.ndarray:
    """Mass energy-absorption coefficient of element ``Z`` in cm^2/g (energies in keV)."""
    return _interp_energy(Z, energy_keV, "mu_en")


def _interp_energy(Z, energy_keV, key):
    tables = load_tables()
    e = check_energy(energy_keV)
    sl = tables.element_slice(atomic_number(Z))
    out = loglog_interp(e, tables.energy_keV[sl], tables.cross_sections[key][sl])
    return _scalar_or_array(out, energy_keV)


def interp_x(x: np.ndarray, x_grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Interpolation on the x grid: linear on [0, x_1] (x_1 = 1e-3 /Angstrom), log-log above."""
    out = np.interp(x, x_grid[:2], values[:2])
    above = x >= x_grid[1]
    out[above] = loglog_interp(x[above], x_grid[1:], values[1:])
    return out


def _check_x(x_per_angstrom) -> np.ndarray:
    high = float(load_tables().x_per_angstrom[-1])
    check_range("x_per_angstrom", x_per_angstrom, 0.0, high, unit="1/Angstrom")
    return np.atleast_1d(np.asarray(x_per_angstrom, dtype=float))


def form_factor(Z: int | str, x_per_angstrom) -> float | np.ndarray:
    """Atomic form factor F(x, Z) (electrons; F(0) = Z), x = sin(theta/2)/lambda in 1/Angstrom."""
    tables = load_tables()
    x = _check_x(x_per_angstrom)
    out = interp_x(x, tables.x_per_angstrom, tables.form_factor[atomic_number(Z) - 1])
    return _scalar_or_array(out.reshape(np.shape(x_per_angstrom)), x_per_angstrom)


def scattering_function(Z: int | str, x_per_angstrom) -> float | np.ndarray:
    """Incoherent scattering function S(x, Z) (S(0) = 0, S -> Z at large x), x in 1/Angstrom."""
    tables = load_tables()
    x = _check_x(x_per_angstrom)
    out = interp_x(x, tables.x_per_angstrom, tables.scattering_function[atomic_number(Z) - 1])
    return _scalar_or_array(out.reshape(np.shape(x_per_angstrom)), x_per_angstrom)
