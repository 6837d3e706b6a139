"""X-ray spectra: photon fluence per energy bin, tungsten tube spectra, filtration, HVL and air kerma.

A ``Spectrum`` holds bin-centre energies (keV) and the photon fluence in each bin, in photons per
mAs per mm^2 at 1 m from the focal spot (for ``monoenergetic`` and user files, whatever scale the
user gives). Tube spectra come from SpekPy (Poludniowski et al., "SpekPy v2.0 - a software toolkit
for modeling x-ray tube spectra", Med Phys 48(7):3630, 2021); everything computed from a spectrum
afterwards (filtration, half-value layers, air kerma) uses xsim's own attenuation tables
(``xsim.physics.materials``), so the projector and the Monte Carlo see the same physics.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
from scipy.optimize import brentq

from xsim.checks import XsimInputError, check_choice, check_range, check_type
from xsim.fileio import atomic_path
from xsim.physics.materials import Material, material

#: Energy range of xsim's attenuation tables; every spectrum bin centre must lie inside it.
ENERGY_RANGE_KEV = (1.0, 200.0)
#: Tube potentials accepted by ``Spectrum.tungsten``, kV: the diagnostic range xsim's physics covers.
KVP_RANGE = (40.0, 150.0)
#: Anode angles accepted by ``Spectrum.tungsten``, degrees.
ANODE_ANGLE_RANGE_DEG = (5.0, 30.0)

# Filter materials for Spectrum.tungsten: xsim name -> SpekPy material name. Matched case-insensitively.
_SPEKPY_FILTERS = {
    **{symbol: symbol for symbol in (
        "Al", "Be", "C", "Ti", "Fe", "Ni", "Cu", "Y", "Zr", "Nb", "Mo", "Rh", "Ag", "Sn", "Gd", "Er",
        "Ta", "W", "Pb")},
    "aluminium": "Al", "aluminum": "Al", "copper": "Cu", "beryllium": "Be", "tin": "Sn",
    "air": "Air",  # dry air near sea level, 0.001205 g/cm^3
    "water": "Water, Liquid",
    "PMMA": "Polymethyl Methacrylate (Lucite Perspex or Plexiglas)",
}
_SPEKPY_FILTERS_LOWER = {name.lower(): spekpy_name for name, spekpy_name in _SPEKPY_FILTERS.items()}

_KEV_TO_J = 1.602176634e-16
_HEADER_KEYS = ("description", "kvp")


class Spectrum:
    """A photon spectrum: fluence per energy bin.

    Parameters
    ----------
    energies_keV : array_like
        Bin-centre energies, keV, strictly increasing, within [1, 200] keV.
    fluence : array_like
        Photons in each bin (not per keV), >= 0. For tube spectra: photons per mAs per mm^2 at
        1 m from the focal spot, in vacuum.
    kvp : float or None
        Tube potential, kV, when the spectrum comes from a tube.
    description : str
        Where the spectrum comes from (model, filtration); written to files.
    """

    def __init__(self, energies_keV, fluence, kvp: float | None = None, description: str = ""):
        energies = np.array(energies_keV, dtype=float, ndmin=1)
        phi = np.array(fluence, dtype=float, ndmin=1)
        if energies.ndim != 1 or phi.shape != energies.shape:
            raise XsimInputError(
                f"energies_keV and fluence must be 1-D arrays of the same length, got shapes "
                f"{energies.shape} and {phi.shape}"
            )
        check_range("energies_keV", energies, *ENERGY_RANGE_KEV, unit="keV")
        if np.any(np.diff(energies) <= 0):
            raise XsimInputError("energies_keV must be strictly increasing")
        check_range("fluence", phi, 0.0, None)
        energies.flags.writeable = False
        phi.flags.writeable = False
        self.energies_keV: np.ndarray = energies
        self.fluence: np.ndarray = phi
        self.kvp: float | None = None if kvp is None else float(kvp)
        self.description: str = str(description)

    # ----------------------------------------------------------------------------------------
    # constructors
    @classmethod
    def tungsten(
        cls,
        kvp: float = 80.0,
        filtration_mm: Mapping[str, float] = MappingProxyType({"Al": 2.5}),
        anode_angle_deg: float = 12.0,
        bin_keV: float = 0.5,
    ) -> Spectrum:
        """Tungsten-anode tube spectrum from SpekPy, per mAs per mm^2 at 1 m, in vacuum.

        SpekPy's default physics model (``casim``) with its NIST data option; the total tube
        filtration in ``filtration_mm`` is applied by SpekPy as part of the tube model (SpekPy
        log-log interpolates the coarse XCOM grid: its Al mu/rho is up to 1.7 % high between 60
        and 80 keV, a < 0.5 % effect on the transmitted fluence for a few mm of Al). Later
        filtration (``filtered``) uses xsim's tables. No air is included: use
        ``.filtered("air", distance_mm)`` if it matters.

        Parameters
        ----------
        kvp : float
            Tube potential, kV, in [40, 150].
        filtration_mm : mapping of str to float
            Total filtration, material name -> thickness in mm (>= 0). Names (case-insensitive):
            element symbols Al, Be, C, Ti, Fe, Ni, Cu, Y, Zr, Nb, Mo, Rh, Ag, Sn, Gd, Er, Ta, W, Pb,
            and aluminium, copper, beryllium, tin, air, water, PMMA.
        anode_angle_deg : float
            Anode (target) angle, degrees, in [5, 30].
        bin_keV : float
            Energy bin width, keV, in [0.1, 5].

        Returns
        -------
        Spectrum
            Photons per mAs per mm^2 at 1 m in each bin; bins from 1 keV to ``kvp``.
        """
        check_range("kvp", kvp, *KVP_RANGE, unit="kV")
        check_range("anode_angle_deg", anode_angle_deg, *ANODE_ANGLE_RANGE_DEG, unit="deg")
        check_range("bin_keV", bin_keV, 0.1, 5.0, unit="keV")
        check_type("filtration_mm", filtration_mm, Mapping)
        filters: dict[str, float] = {}
        for name, thickness_mm in filtration_mm.items():
            check_type("filtration_mm key", name, str)
            if name.lower() not in _SPEKPY_FILTERS_LOWER:
                check_choice("filtration_mm material", name, _SPEKPY_FILTERS)  # raises, with hints
            check_range(f"filtration_mm[{name!r}]", thickness_mm, 0.0, None, unit="mm")
            spekpy_name = _SPEKPY_FILTERS_LOWER[name.lower()]
            filters[spekpy_name] = filters.get(spekpy_name, 0.0) + float(thickness_mm)
        energies, phi = _spekpy_spectrum(
            float(kvp), tuple(sorted(filters.items())), float(anode_angle_deg), float(bin_keV)
        )
        filt_txt = ", ".join(f"{t:g} mm {m}" for m, t in sorted(filters.items())) or "none"
        description = (
            f"tungsten {kvp:g} kVp, {anode_angle_deg:g} deg anode, {bin_keV:g} keV bins, "
            f"SpekPy {_spekpy_version()}; filtration (SpekPy): {filt_txt}"
        )
        return cls(energies, phi, kvp=kvp, description=description)

    @classmethod
    def tungsten_with_hvl(
        cls,
        kvp: float,
        hvl_mm: float,
        material: str | Material = "Al",
        anode_angle_deg: float = 12.0,
        bin_keV: float = 0.5,
    ) -> Spectrum:
        """Tungsten spectrum filtered to a target first HVL, the way IEC 61267 beam qualities
        (RQR-n: kVp and HVL in mm Al) are set up on a real tube.

        The unfiltered SpekPy spectrum is filtered with ``material`` (xsim tables) until its
        first HVL in the same material equals ``hvl_mm``. The thickness found is in the
        ``description``.

        Parameters
        ----------
        kvp : float
            Tube potential, kV, in [40, 150].
        hvl_mm : float
            Target first half-value layer, mm of ``material``, > 0.
        material : str or Material
            Filter and HVL material.
        anode_angle_deg, bin_keV : float
            As in ``tungsten``.
        """
        check_range("hvl_mm", hvl_mm, 0.0, None, low_inclusive=False, unit="mm")
        base = cls.tungsten(kvp, {}, anode_angle_deg, bin_keV)
        mat = _as_material(material)

        def excess_mm(thickness_mm: float) -> float:
            return base.filtered(mat, thickness_mm).hvl_mm(mat) - hvl_mm

        if excess_mm(0.0) > 0:
            raise XsimInputError(
                f"hvl_mm={hvl_mm:g} mm is below the HVL of the unfiltered {kvp:g} kVp spectrum "
                f"({base.hvl_mm(mat):.4g} mm)"
            )
        # HVL rises monotonically with filtration and saturates towards ln2/mu(kvp).
        thick_mm = 1.0
        while excess_mm(thick_mm) < 0:
            thick_mm *= 2.0
            if thick_mm > 1e4:
                raise XsimInputError(f"hvl_mm={hvl_mm:g} mm cannot be reached at {kvp:g} kVp")
        filter_mm = brentq(excess_mm, 0.0, thick_mm, xtol=1e-6)
        description = (
            f"tungsten {kvp:g} kVp, {anode_angle_deg:g} deg anode, {bin_keV:g} keV bins, "
            f"SpekPy {_spekpy_version()}; filtration (xsim tables): {filter_mm:.4f} mm "
            f"{_material_name(material)} for HVL {hvl_mm:g} mm"
        )
        filtered = base.filtered(mat, filter_mm)
        return cls(filtered.energies_keV, filtered.fluence, kvp=kvp, description=description)

    @classmethod
    def monoenergetic(cls, energy_keV: float, fluence: float = 1.0) -> Spectrum:
        """A single line at ``energy_keV`` (keV, in [1, 200]) carrying ``fluence`` photons (> 0)."""
        check_range("energy_keV", energy_keV, *ENERGY_RANGE_KEV, unit="keV")
        check_range("fluence", fluence, 0.0, None, low_inclusive=False)
        return cls([energy_keV], [fluence], description=f"monoenergetic {energy_keV:g} keV")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Spectrum:
        """Read a spectrum from a two-column text file: energy_keV, fluence per bin.

        Columns are separated by a comma or whitespace; lines starting with ``#`` are comments,
        except ``# kvp: <value>`` and ``# description: <text>``, which ``to_file`` writes.
        """
        path = Path(path)
        energies: list[float] = []
        phi: list[float] = []
        header: dict[str, str] = {}
        with open(path, encoding="utf-8") as handle:
            for line_no, raw in enumerate(handle, start=1):
                line = raw.strip()
                where = f"{path}, line {line_no}"
                if line.startswith("#"):
                    key, sep, value = line[1:].partition(":")
                    if sep and key.strip() in _HEADER_KEYS:
                        header[key.strip()] = value.strip()
                    continue
                if not line:
                    continue
                fields = [f for f in re.split(r"[,\s]+", line) if f]
                if len(fields) != 2:
                    raise XsimInputError(
                        f"expected 2 columns (energy_keV, fluence), got {len(fields)}: {line!r} "
                        f"(in {where}; comment lines start with '#')"
                    )
                values = []
                for column, text in zip(("energy_keV", "fluence"), fields):
                    try:
                        values.append(float(text))
                    except ValueError:
                        raise XsimInputError(
                            f"{column} must be a number, got {text!r} (in {where})"
                        ) from None
                check_range("energy_keV", values[0], *ENERGY_RANGE_KEV, unit="keV", source=where)
                check_range("fluence", values[1], 0.0, None, source=where)
                if energies and values[0] <= energies[-1]:
                    raise XsimInputError(
                        f"energy_keV must increase from line to line, got {values[0]:g} after "
                        f"{energies[-1]:g} (in {where})"
                    )
                energies.append(values[0])
                phi.append(values[1])
        if not energies or sum(phi) <= 0:
            raise XsimInputError(f"spectrum file holds no photons (no rows or all fluence 0) (in {path})")
        kvp_text = header.get("kvp", "None")
        try:
            kvp = None if kvp_text == "None" else float(kvp_text)
        except ValueError:
            raise XsimInputError(f"kvp must be a number, got {kvp_text!r} (in {path})") from None
        return cls(energies, phi, kvp=kvp, description=header.get("description", f"read from {path.name}"))

    def to_file(self, path: str | os.PathLike) -> None:
        """Write the spectrum as CSV (energy_keV, fluence) that ``from_file`` reads back exactly.

        The file is written under a temporary name in the same folder and then renamed, so a
        reader never sees a half-written file.
        """
        path = Path(path)
        lines = [
            "# xsim spectrum",
            f"# description: {' '.join(self.description.split())}",
            f"# kvp: {self.kvp!r}",
            "# columns: energy_keV (bin centre), fluence (photons per bin; tube spectra: per mAs "
            "per mm^2 at 1 m)",
        ]
        lines += [f"{e!r},{f!r}" for e, f in zip(self.energies_keV.tolist(), self.fluence.tolist())]
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------------------------------
    # derived quantities
    @property
    def total_fluence(self) -> float:
        """Sum of the bins: photons per mAs per mm^2 at 1 m for tube spectra."""
        return float(self.fluence.sum())

    @property
    def mean_energy_keV(self) -> float:
        """Fluence-weighted mean energy, keV: sum(phi E) / sum(phi)."""
        total = self._require_photons()
        return float(np.dot(self.fluence, self.energies_keV) / total)

    @property
    def bin_edges_keV(self) -> np.ndarray:
        """Bin edges, keV (length n + 1): midpoints between centres; the outer edges lie half the
        neighbouring spacing beyond the first and last centre. A one-bin spectrum is a line:
        both edges equal its energy."""
        e = self.energies_keV
        if e.size == 1:
            return np.array([e[0], e[0]])
        mid = 0.5 * (e[1:] + e[:-1])
        return np.concatenate(([e[0] - (mid[0] - e[0])], mid, [e[-1] + (e[-1] - mid[-1])]))

    def filtered(self, material: str | Material, thickness_mm: float) -> Spectrum:
        """Spectrum after a slab of ``material`` (narrow beam, Beer-Lambert, xsim tables).

        phi'(E) = phi(E) exp(-(mu/rho)(E) rho t)

        Parameters
        ----------
        material : str or Material
            Slab material (name resolved with ``xsim.physics.materials.material``).
        thickness_mm : float
            Slab thickness, mm, >= 0.
        """
        check_range("thickness_mm", thickness_mm, 0.0, None, unit="mm")
        mat = _as_material(material)
        mu_per_mm = _mu_per_mm(mat, self.energies_keV)
        return Spectrum(
            self.energies_keV, self.fluence * np.exp(-mu_per_mm * thickness_mm), kvp=self.kvp,
            description=f"{self.description}; + {thickness_mm:g} mm {_material_name(material)} (xsim tables)",
        )

    def thickness_for_kerma_fraction(self, material: str | Material, fraction: float) -> float:
        """Thickness of ``material`` (mm) that reduces the air kerma to ``fraction`` of its value.

        Narrow beam: K(t) = sum_i phi_i E_i (mu_en/rho)_air(E_i) exp(-mu(E_i) t), solved for
        K(t) = fraction K(0) with Brent's method. fraction = 0.5 gives the first HVL, 0.25 the
        quarter-value layer (TG-195 Case 1, AAPM Report 195, 2015).
        """
        check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        mat = _as_material(material)
        weight = self._kerma_weights()
        keep = weight > 0
        weight, mu_per_mm = weight[keep], _mu_per_mm(mat, self.energies_keV[keep])
        log_inv = math.log(1.0 / fraction)

        def residual(thickness_mm: float) -> float:
            return float(np.dot(weight, np.exp(-mu_per_mm * thickness_mm)) / weight.sum()) - fraction

        # exp(-mu_max t) <= K(t)/K(0) <= exp(-mu_min t) brackets the root (widened by rounding).
        low, high = log_inv / mu_per_mm.max(), log_inv / mu_per_mm.min()
        if high - low <= 1e-12 * high:  # a single attenuation coefficient: t = ln(1/f) / mu
            return float(low)
        return float(brentq(residual, low * (1 - 1e-9), high * (1 + 1e-9), xtol=1e-10, rtol=1e-12))

    def hvl_mm(self, material: str | Material = "Al", order: int = 1) -> float:
        """First (order=1) or second (order=2) half-value layer by air kerma, mm of ``material``.

        Narrow-beam air-kerma HVL (IAEA TRS-457, 2007, section 4.2.3): HVL1 = t(1/2);
        HVL2 = t(1/4) - t(1/2), with t(f) from ``thickness_for_kerma_fraction``.
        """
        check_choice("order", order, (1, 2))
        first = self.thickness_for_kerma_fraction(material, 0.5)
        if order == 1:
            return first
        return self.thickness_for_kerma_fraction(material, 0.25) - first

    def air_kerma_per_mas_uGy(self, distance_mm: float = 1000.0) -> float:
        """Air kerma per mAs at ``distance_mm`` from the focal spot, uGy per mAs.

        K = sum_i phi_i E_i (mu_en/rho)_air(E_i) (1000 mm / d)^2, with phi_i in photons per mAs
        per mm^2 at 1 m (converted to per cm^2), E_i in J and mu_en/rho in cm^2/kg. Inverse square
        law in vacuum: air attenuation is not included (use ``filtered("air", ...)``). Meaningful
        only for tube spectra, whose fluence is per mAs at 1 m.

        Parameters
        ----------
        distance_mm : float
            Distance from the focal spot, mm, > 0.
        """
        check_range("distance_mm", distance_mm, 0.0, None, low_inclusive=False, unit="mm")
        per_cm2_at_1m = 100.0 * self._kerma_weights().sum()  # keV cm^2/g per mm^2 -> per cm^2
        gray = per_cm2_at_1m * _KEV_TO_J * 1000.0  # keV -> J, cm^2/g -> cm^2/kg
        return float(gray * 1e6 * (1000.0 / distance_mm) ** 2)

    def normalized(self) -> Spectrum:
        """The same spectrum with fluence summing to 1 (probability per bin)."""
        total = self._require_photons()
        return Spectrum(self.energies_keV, self.fluence / total, kvp=self.kvp,
                        description=f"{self.description}; normalized")

    def resampled(self, bin_keV: float) -> Spectrum:
        """Rebin onto bins of width ``bin_keV`` (keV) whose edges are multiples of ``bin_keV``.

        Photons are conserved: each old bin spreads its photons uniformly over its width (a line,
        i.e. a one-bin spectrum, goes to the new bin that contains it). Photons outside the new
        grid's [1, 200] keV centres go to the first or last new bin.
        """
        check_range("bin_keV", bin_keV, 0.01, 50.0, unit="keV")
        edges = self.bin_edges_keV
        lo_e, hi_e = ENERGY_RANGE_KEV
        # New bin i spans [i, i + 1) * bin_keV; its centre must lie in [1, 200] keV.
        first = max(math.floor(edges[0] / bin_keV + 1e-9), math.ceil(lo_e / bin_keV - 0.5 - 1e-9))
        last = min(math.ceil(edges[-1] / bin_keV - 1e-9), math.floor(hi_e / bin_keV - 0.5 + 1e-9) + 1)
        last = max(last, first + 1)
        index = np.arange(first, last)
        new_lo = index * bin_keV
        new_hi = new_lo + bin_keV
        new_lo[0], new_hi[-1] = -np.inf, np.inf
        old_lo, old_hi = edges[:-1, None], edges[1:, None]
        width = old_hi - old_lo
        overlap = np.clip(np.minimum(old_hi, new_hi) - np.maximum(old_lo, new_lo), 0.0, None)
        line = (old_lo >= new_lo) & (old_lo < new_hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(width > 0, overlap / width, line)
        centres = np.round((index + 0.5) * bin_keV, 9)
        return Spectrum(centres, share.T @ self.fluence, kvp=self.kvp,
                        description=f"{self.description}; resampled to {bin_keV:g} keV bins")

    def plot(self, ax=None, **kwargs):
        """Plot fluence per keV against energy (lines as vertical bars); returns the axes.

        Keyword arguments go to matplotlib (``label``, ``color``, ...).
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        if self.energies_keV.size == 1:
            ax.vlines(self.energies_keV, 0.0, self.fluence, **kwargs)
            ax.set_ylabel("photons per bin")
        else:
            ax.step(self.energies_keV, self.fluence / np.diff(self.bin_edges_keV), where="mid", **kwargs)
            ax.set_ylabel("photons / (keV mAs mm$^2$) at 1 m" if self.kvp else "photons / keV")
        ax.set_xlabel("energy (keV)")
        return ax

    def __repr__(self) -> str:
        e = self.energies_keV
        mean = f"{self.mean_energy_keV:.2f} keV" if self.total_fluence > 0 else "n/a"
        return (f"Spectrum(kvp={self.kvp}, {e.size} bins {e[0]:g}-{e[-1]:g} keV, "
                f"mean {mean}, total fluence {self.total_fluence:.4g})")

    # ----------------------------------------------------------------------------------------
    def _kerma_weights(self) -> np.ndarray:
        """phi_i E_i (mu_en/rho)_air(E_i): air kerma per bin, in keV cm^2/g per (mm^2 mAs)."""
        self._require_photons()
        return self.fluence * self.energies_keV * material("air").mu_en_over_rho(self.energies_keV)

    def _require_photons(self) -> float:
        total = float(self.fluence.sum())
        if total <= 0:
            raise XsimInputError(f"the spectrum holds no photons (all fluence 0): {self.description}")
        return total


def _as_material(value: str | Material) -> Material:
    check_type("material", value, (str, Material))
    return material(value) if isinstance(value, str) else value


def _material_name(value: str | Material) -> str:
    return value if isinstance(value, str) else getattr(value, "name", repr(value))


def _mu_per_mm(mat: Material, energies_keV: np.ndarray) -> np.ndarray:
    """Linear attenuation coefficient, 1/mm: (mu/rho) [cm^2/g] * rho [g/cm^3] / 10."""
    return np.asarray(mat.mu_over_rho(energies_keV, kind="total"), dtype=float) * mat.density_g_cm3 / 10.0


@lru_cache(maxsize=1)
def _spekpy_version() -> str:
    """SpekPy's version, from the installed package's metadata (importing SpekPy takes ~0.5 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spekpy")
    except PackageNotFoundError:
        import spekpy

        return getattr(spekpy, "__version__", "?")


# Spectra stored on disk next to the compiled kernels: a SpekPy model takes ~0.3 s and its import ~0.5 s,
# paid again by every process otherwise (each dataset worker, each `xsim render`). The file name is a hash of
# everything the spectrum depends on: the arguments, the options of the SpekPy model below and SpekPy's
# version. A file that does not load (truncated, damaged, from another format) is recomputed and replaced.
_SPECTRUM_CACHE_FORMAT = 1
_SPEK_OPTIONS = {"physics": "casim", "mu_data_source": "nist", "z": 100.0, "mas": 1.0}


def _spectrum_cache_file(kvp: float, filters: tuple, anode_angle_deg: float, bin_keV: float) -> Path:
    from xsim.paths import cache_dir

    key = repr((_SPECTRUM_CACHE_FORMAT, _spekpy_version(), sorted(_SPEK_OPTIONS.items()), float(kvp), filters,
                float(anode_angle_deg), float(bin_keV)))
    return cache_dir() / "spectra" / f"tungsten-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


@lru_cache(maxsize=64)
def _spekpy_spectrum(
    kvp: float, filters: tuple[tuple[str, float], ...], anode_angle_deg: float, bin_keV: float
) -> tuple[np.ndarray, np.ndarray]:
    """SpekPy tungsten spectrum as (bin centres keV, photons per mAs per mm^2 at 1 m per bin).

    SpekPy's ``get_spectrum()`` (flu=True, diff=True) returns photons cm^-2 keV^-1 for the state's
    tube load ``mas`` (1 mAs) at ``z`` (100 cm) from the focus, in vacuum; its grid starts at 1 keV.
    Per bin and per mm^2: multiply by the bin width, divide by 100. Cached in the process and on disk
    (``_spectrum_cache_file``).
    """
    path = _spectrum_cache_file(kvp, filters, anode_angle_deg, bin_keV)
    try:
        with np.load(path) as stored:
            energies, phi = stored["energies_keV"], stored["fluence"]
        if energies.ndim != 1 or energies.shape != phi.shape or not np.isfinite(phi).all():
            raise ValueError("malformed")
    except Exception:  # missing, truncated (EOFError, BadZipFile), damaged: any failure means recompute
        energies, phi = _spekpy_model(kvp, filters, anode_angle_deg, bin_keV)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, energies_keV=energies, fluence=phi)
        except OSError:
            pass  # a read-only cache folder only costs the recomputation next time
    energies.flags.writeable = False
    phi.flags.writeable = False
    return energies, phi


def _spekpy_model(kvp: float, filters: tuple, anode_angle_deg: float, bin_keV: float):
    import spekpy

    spek = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=bin_keV, **_SPEK_OPTIONS)
    for name, thickness_mm in filters:
        if thickness_mm > 0:
            spek.filter(name, thickness_mm)
    energies, per_cm2_per_keV = spek.get_spectrum(flu=True, diff=True)
    return np.array(energies, dtype=float), np.array(per_cm2_per_keV, dtype=float) * bin_keV / 100.0
