"""Materials: composition, density and their X-ray interaction coefficients.

Owns the ``Material`` type and the material library (``physics_data/materials.json``). A material's
mass coefficients follow the mixture rule on the element tables of :mod:`xsim.physics.tables`:

    (mu/rho)_material(E) = sum_i w_i (mu/rho)_i(E)        (w_i: mass fraction of element i)

which is how NIST XCOM and SRD 126 build compounds (Hubbell & Seltzer, NISTIR 5632, eq. 2).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import re
from collections.abc import Mapping

import numpy as np

from ..checks import XsimInputError, check_choice, check_positive, check_type
from ..paths import physics_data_dir
from . import tables

AVOGADRO_PER_MOL = 6.02214076e23
FRACTION_TOL = 1e-3  # mass fractions must sum to 1 within this; they are then normalised
_FORMULA_TOKEN = re.compile(r"([A-Z][a-z]?|\(|\)|\d+(?:\.\d+)?|\.\d+)")


@dataclasses.dataclass(frozen=True)
class Material:
    """A homogeneous material: name, density and elemental mass fractions.

    Parameters
    ----------
    name : str
        Label (free text).
    density_g_cm3 : float
        Mass density in g/cm^3, > 0.
    composition : mapping of str to float
        Mass fraction per element symbol ("H", "Ca", ...). Must sum to 1 within 1e-3
        (``FRACTION_TOL``); it is then normalised to sum exactly to 1. Zero fractions are dropped.
    source : str, optional
        Where the composition and density come from.
    """

    name: str
    density_g_cm3: float
    composition: Mapping[str, float]
    source: str = ""

    def __post_init__(self):
        check_type("name", self.name, str)
        if isinstance(self.density_g_cm3, bool) or not isinstance(self.density_g_cm3, numbers.Real):
            raise XsimInputError(f"density_g_cm3 must be a number, got {self.density_g_cm3!r}")
        check_positive("density_g_cm3", self.density_g_cm3, unit="g/cm^3")
        check_type("composition", self.composition, Mapping)
        if not self.composition:
            raise XsimInputError(f"composition of material {self.name!r} is empty")
        clean = {}
        for sym, frac in self.composition.items():
            z = tables.atomic_number(sym) if isinstance(sym, str) else None
            if z is None:
                raise XsimInputError(f"composition keys must be element symbols, got {sym!r}")
            if not (isinstance(frac, numbers.Real) and math.isfinite(frac) and frac >= 0):
                raise XsimInputError(
                    f"mass fraction of {sym} in material {self.name!r} must be a finite number "
                    f">= 0, got {frac!r}")
            if frac > 0:
                s = tables.symbol(z)
                clean[s] = clean.get(s, 0.0) + float(frac)
        total = sum(clean.values())
        if abs(total - 1.0) > FRACTION_TOL:
            raise XsimInputError(
                f"mass fractions of material {self.name!r} must sum to 1 (within {FRACTION_TOL:g}),"
                f" got {total:.6g}")
        by_z = sorted(clean.items(), key=lambda t: tables.atomic_number(t[0]))
        comp = {s: w / total for s, w in by_z}
        object.__setattr__(self, "density_g_cm3", float(self.density_g_cm3))
        object.__setattr__(self, "composition", comp)

    def __hash__(self):
        return hash((self.name, self.density_g_cm3, tuple(self.composition.items())))

    # -- properties ---------------------------------------------------------------------------
    @property
    def density(self) -> float:
        """Mass density in g/cm^3 (alias of ``density_g_cm3``)."""
        return self.density_g_cm3

    @functools.cached_property
    def _elements(self) -> tuple[np.ndarray, np.ndarray]:
        z = np.array([tables.atomic_number(s) for s in self.composition])
        w = np.array(list(self.composition.values()))
        return z, w

    # -- coefficients -------------------------------------------------------------------------
    def mu_over_rho(self, energy_keV, kind: str = "total") -> float | np.ndarray:
        """Mass attenuation coefficient in cm^2/g.

        Parameters
        ----------
        energy_keV : float or array_like
            Photon energies in keV, within [1, 200].
        kind : {"total", "rayleigh", "compton", "photoelectric"}
            Interaction; "total" includes coherent (Rayleigh) scattering.

        Returns
        -------
        float or ndarray
            Same shape as ``energy_keV`` (a float for a scalar).
        """
        check_choice("kind", kind, tables.KINDS)
        return self._mix(energy_keV, kind)

    def mu_en_over_rho(self, energy_keV) -> float | np.ndarray:
        """Mass energy-absorption coefficient in cm^2/g (energies in keV, within [1, 200])."""
        return self._mix(energy_keV, "mu_en")

    def mu_per_mm(self, energy_keV, kind: str = "total", density_g_cm3: float | None = None):
        """Linear attenuation coefficient in 1/mm: mu/rho [cm^2/g] * rho [g/cm^3] / 10.

        Parameters
        ----------
        energy_keV : float or array_like
            Photon energies in keV.
        kind : str
            As in :meth:`mu_over_rho`.
        density_g_cm3 : float, optional
            Density to use instead of the material's own.
        """
        rho = self.density_g_cm3 if density_g_cm3 is None else density_g_cm3
        check_positive("density_g_cm3", rho, unit="g/cm^3")
        return self.mu_over_rho(energy_keV, kind) * rho / 10.0

    def tabulate(self, energies_keV) -> dict[str, np.ndarray]:
        """All coefficients on one energy grid, for kernels.

        Returns
        -------
        dict
            Keys "total", "rayleigh", "compton", "photoelectric", "mu_en"; arrays in cm^2/g with
            the shape of ``energies_keV``.
        """
        e = np.asarray(tables.check_energy(energies_keV), dtype=float)
        out = {kind: np.asarray(self._mix(e, kind)) for kind in tables.KINDS}
        out["mu_en"] = np.asarray(self._mix(e, "mu_en"))
        return out

    def _mix(self, energy_keV, key: str):
        t = tables.load_tables()
        e = tables.check_energy(energy_keV)
        flat = np.atleast_1d(e).ravel()
        total = np.zeros_like(flat)
        for z, w in zip(*self._elements):
            sl = t.element_slice(int(z))
            total += w * tables.loglog_interp(flat, t.energy_keV[sl], t.cross_sections[key][sl])
        return float(total[0]) if np.ndim(energy_keV) == 0 else total.reshape(np.shape(e))

    # -- scattering factors ---------------------------------------------------------------------
    def form_factor_squared(self, x_per_angstrom) -> float | np.ndarray:
        """Molecular (independent-atom) F^2 per gram: N_A * sum_i (w_i / A_i) F_i(x)^2.

        Units: electrons^2 per gram. Multiplied by the Thomson cross section
        r_e^2 (1 + cos^2 theta) / 2 [cm^2/sr] it gives the coherent d(sigma)/d(Omega) in
        cm^2/g/sr. x = sin(theta/2)/lambda in 1/Angstrom, within [0, 20].
        """
        return self._mix_x(x_per_angstrom, tables.form_factor, square=True)

    def scattering_function(self, x_per_angstrom) -> float | np.ndarray:
        """Incoherent scattering function per gram: N_A * sum_i (w_i / A_i) S_i(x).

        Units: electrons per gram (-> N_A Z/A at large x). Multiplied by the Klein-Nishina
        d(sigma)/d(Omega) per electron [cm^2/sr] it gives the incoherent cross section in
        cm^2/g/sr. x = sin(theta/2)/lambda in 1/Angstrom, within [0, 20].
        """
        return self._mix_x(x_per_angstrom, tables.scattering_function, square=False)

    def _mix_x(self, x_per_angstrom, func, square: bool):
        total = 0.0
        for z, w in zip(*self._elements):
            f = np.asarray(func(int(z), x_per_angstrom))
            total = total + w / tables.atomic_weight(int(z)) * (f * f if square else f)
        out = AVOGADRO_PER_MOL * np.asarray(total)
        return float(out) if np.ndim(x_per_angstrom) == 0 else out

    # -- constructors -------------------------------------------------------------------------
    def with_density(self, density_g_cm3: float) -> Material:
        """The same composition at another density (g/cm^3)."""
        return dataclasses.replace(self, density_g_cm3=density_g_cm3)

    @classmethod
    def from_mass_fractions(cls, name: str, fractions: Mapping[str, float],
                            density_g_cm3: float) -> Material:
        """Material from mass fractions by element symbol (sum 1 within 1e-3) and a density."""
        return cls(name=name, density_g_cm3=density_g_cm3, composition=dict(fractions))

    @classmethod
    def from_formula(cls, name: str, formula: str, density_g_cm3: float) -> Material:
        """Material from a chemical formula such as "H2O", "CsI" or "Ca10(PO4)6(OH)2".

        Element symbols are case-sensitive; counts may be decimal ("H1.5"); parentheses nest.
        Mass fractions use the standard atomic weights of the tables.
        """
        check_type("formula", formula, str)
        atoms = _parse_formula(formula)
        mass = {s: n * tables.atomic_weight(s) for s, n in atoms.items()}
        total = sum(mass.values())
        return cls(name=name, density_g_cm3=density_g_cm3,
                   composition={s: m / total for s, m in mass.items()}, source=f"formula {formula}")

    @classmethod
    def mixture(cls, name: str, parts: Mapping[Material | str, float],
                density_g_cm3: float) -> Material:
        """Mixture of materials by mass fraction (library names allowed), with its own density.

        ``parts`` maps Material (or library name) to its mass fraction; fractions sum to 1
        within 1e-3. Elemental fractions are w_i = sum_m f_m w_{i,m}.
        """
        check_type("parts", parts, Mapping)
        comp: dict[str, float] = {}
        total = 0.0
        for part, frac in parts.items():
            mat = material(part) if isinstance(part, str) else part
            check_type("mixture part", mat, Material)
            if not (isinstance(frac, numbers.Real) and math.isfinite(frac) and frac >= 0):
                raise XsimInputError(f"mass fraction of {mat.name!r} in mixture {name!r} must be a "
                                     f"finite number >= 0, got {frac!r}")
            total += frac
            for s, w in mat.composition.items():
                comp[s] = comp.get(s, 0.0) + frac * w
        if abs(total - 1.0) > FRACTION_TOL:
            raise XsimInputError(f"mass fractions of mixture {name!r} must sum to 1 (within "
                                 f"{FRACTION_TOL:g}), got {total:.6g}")
        return cls(name=name, density_g_cm3=density_g_cm3, composition=comp,
                   source="mixture of " + ", ".join(
                       f"{(p if isinstance(p, str) else p.name)} {f:g}" for p, f in parts.items()))


def _parse_formula(formula: str) -> dict[str, float]:
    """Atom counts of a formula with nested parentheses, e.g. Ca10(PO4)6(OH)2 -> Ca 10, P 6, ..."""
    compact = formula.replace(" ", "")
    tokens = _FORMULA_TOKEN.findall(compact)
    if not compact or "".join(tokens) != compact:
        raise XsimInputError(f"formula {formula!r} is not a chemical formula (e.g. 'H2O', "
                             "'Ca10(PO4)6(OH)2')")
    known = set(tables.load_tables().symbols)
    pos = 0

    def count() -> float:
        nonlocal pos
        if pos < len(tokens) and tokens[pos][0] in "0123456789.":
            pos += 1
            return float(tokens[pos - 1])
        return 1.0

    def group() -> dict[str, float]:
        nonlocal pos
        atoms: dict[str, float] = {}
        while pos < len(tokens) and tokens[pos] != ")":
            tok = tokens[pos]
            pos += 1
            if tok == "(":
                inner = group()
                if pos >= len(tokens):
                    raise XsimInputError(f"formula {formula!r} has an unmatched '('")
                pos += 1  # the ')'
                n = count()
                for s, k in inner.items():
                    atoms[s] = atoms.get(s, 0.0) + n * k
            elif tok in known:
                atoms[tok] = atoms.get(tok, 0.0) + count()
            elif tok[0].isalpha():
                raise XsimInputError(f"formula {formula!r}: unknown element symbol {tok!r}")
            else:
                raise XsimInputError(f"formula {formula!r}: a count must follow an element or ')'")
        return atoms

    atoms = group()
    if pos != len(tokens):
        raise XsimInputError(f"formula {formula!r} has an unmatched ')'")
    if not atoms or any(n <= 0 for n in atoms.values()):
        raise XsimInputError(f"formula {formula!r}: atom counts must be > 0")
    return atoms


# ------------------------------------------------------------------------------------------------
def _key(name: str) -> str:
    """Lookup key: case-insensitive, with '_', '-' and repeated spaces read as one space."""
    return " ".join(re.sub(r"[_\-]", " ", name).lower().split())


@functools.lru_cache(maxsize=None)
def _library() -> tuple[dict[str, Material], dict[str, str]]:
    path = physics_data_dir() / "materials.json"
    if not path.is_file():
        raise XsimInputError(f"material library {path} not found; regenerate it with "
                             "python physics_data/build_tables.py")
    doc = json.loads(path.read_text())
    if doc.get("format_version") != tables.FORMAT_VERSION:
        raise XsimInputError(f"material library {path} has format_version "
                             f"{doc.get('format_version')}, this xsim reads "
                             f"{tables.FORMAT_VERSION}; regenerate it with "
                             "python physics_data/build_tables.py")
    by_name: dict[str, Material] = {}
    alias: dict[str, str] = {}
    for entry in doc["materials"]:
        mat = Material(name=entry["name"], density_g_cm3=entry["density_g_cm3"],
                       composition=entry["composition"], source=entry["source"])
        by_name[entry["name"]] = mat
        for a in [entry["name"], *entry["aliases"]]:
            alias[_key(a)] = entry["name"]
    return by_name, alias


def list_materials() -> list[str]:
    """Names of the library materials (see ``physics_data/materials.json``)."""
    return list(_library()[0])


def material(name: str) -> Material:
    """Library material by name or alias, case-insensitive ("Al", "aluminum", "bone", ...).

    A chemical symbol not in the library ("Gd", "Mo") gives the pure element at its standard
    density. Unknown names raise XsimInputError with the closest matches.
    """
    check_type("material name", name, str)
    by_name, alias = _library()
    key = _key(name)
    if key in alias:
        return by_name[alias[key]]
    symbols = {s.lower(): s for s in tables.load_tables().symbols}
    if key in symbols:
        sym = symbols[key]
        return Material(name=sym, density_g_cm3=tables.element_density(sym),
                        composition={sym: 1.0}, source="element; density xraylib ElementDensity")
    close = difflib.get_close_matches(key, list(alias), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(alias[c]) for c in close)}?" if close else ""
    raise XsimInputError(f"unknown material {name!r}{hint} (known: {', '.join(by_name)}; "
                         "or an element symbol)")
