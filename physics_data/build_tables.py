"""Build xsim's physics tables from xraylib: ``elements.h5`` and ``materials.json``.

Run from the repository root::

    python physics_data/build_tables.py

This script is the only place xsim uses xraylib (pip extra ``tables``); run time reads the files it
writes (``xsim.physics.tables``, ``xsim.physics.materials``). It takes about 5 s.

What ``elements.h5`` holds, for Z = 1..92 (units: keV, cm^2/g, 1/Angstrom):

* mass cross sections on a per-element log energy grid from 1 to 200 keV: coherent (``CS_Rayl``),
  incoherent (``CS_Compt``), photoelectric (``CS_Photo``), their sum ``total`` (checked against
  ``CS_Total``) and the mass energy-absorption coefficient ``mu_en`` computed here (see
  :func:`mu_en_over_rho`; xraylib's ``CS_Energy`` is 34 % low for air at 20 keV). The grid is
  refined until log-log interpolation reproduces xraylib within ``REFINE_TOL`` at every interval
  midpoint; the midpoints and their xraylib values are stored under ``/checks`` so the run-time
  interpolation can be tested without xraylib.
* every absorption edge (K, L1-L3, M1-M5, N1-N7) inside 1-200 keV as two nodes at the same energy
  (below-edge value first). xraylib 4.3's photoelectric data does not jump at its own
  ``EdgeEnergy``: the offset is < 1e-4 for K shells of Z > 50 but up to 3 % for N shells, so the
  nodes are placed where the ``CS_Photo`` data jumps (see :func:`locate_edges`); both energies
  are stored under ``/edges``.
* atomic form factor F(x, Z) (``FF_Rayl``) and incoherent scattering function S(x, Z)
  (``SF_Compt``) on one grid x = sin(theta/2)/lambda: x = 0 (F = Z, S = 0) then a log grid from
  1e-3 to 20 per Angstrom (x at theta = 180 deg is E / 12.398 keV*Angstrom = 16.1 at 200 keV).

``materials.json`` holds the material library (compositions as data below, each with its source).
"""
from __future__ import annotations

import datetime
import functools
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import xraylib

FORMAT_VERSION = 1
E_MIN_KEV, E_MAX_KEV = 1.0, 200.0
POINTS_PER_DECADE = 40  # starting grid; refined where needed
REFINE_TOL = 1e-3  # relative log-log interpolation error allowed at interval midpoints
X_MIN, X_MAX, X_PER_DECADE = 1e-3, 20.0, 100  # 1/Angstrom
HC_KEV_ANGSTROM = 12.3984198  # h*c (CODATA 2018)
ELECTRON_REST_KEV = 510.99895
N_SCATTER_ANGLES = 512  # Gauss-Legendre nodes in cos(theta) for the Compton energy transfer
KINDS = ("rayleigh", "compton", "photoelectric")
OUT_DIR = Path(__file__).resolve().parent

# Shells searched for edges and for fluorescence, by xraylib macro index (K=0 ... N7=15).
SHELL_NAMES = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5",
               "N1", "N2", "N3", "N4", "N5", "N6", "N7")
FLUORESCENT_SHELLS = SHELL_NAMES[:9]  # K, L, M: N-shell fluorescence yields are < 1e-3
SHARE_EDGE_MARGIN = 0.03  # see photoabsorption_shell_fractions
MAX_RAMP = 0.01  # relative width up to which a spline ramp across an edge is made a sharp edge
STEEP_STEP = 0.02  # log rise per 0.027 % scan step that marks a ramp (power laws: ~1e-3)


# ----------------------------------------------------------------------------------------------
# Material library: compositions are mass fractions by element symbol.
# ICRU-44 tissues: ICRU Report 44 (1989) as listed in NIST SRD 126 (Hubbell & Seltzer), Table 2,
# https://physics.nist.gov/PhysRefData/XrayMassCoef/tab2.html ; the NIST Table 4 mu/rho values
# assume exactly these compositions and densities.
NIST_TABLE2 = "NIST SRD 126 Table 2 (ICRU Report 44 composition and density)"
MATERIALS = [
    dict(name="air", aliases=["dry air", "air, dry", "air (dry, near sea level)"],
         density_g_cm3=1.20479e-3,
         composition={"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
         source="NIST SRD 126 Table 2, Air, Dry (near sea level)"),
    dict(name="lung", aliases=["lung tissue", "lung (icru-44)"], density_g_cm3=1.05,
         composition={"H": 0.103, "C": 0.105, "N": 0.031, "O": 0.749, "Na": 0.002, "P": 0.002,
                      "S": 0.003, "Cl": 0.003, "K": 0.002},
         source=NIST_TABLE2 + ", Lung Tissue (ICRU-44); density of the tissue itself, "
                "not of inflated lung (use with_density or the HU calibration)"),
    dict(name="adipose", aliases=["adipose tissue", "fat", "adipose (icru-44)"],
         density_g_cm3=0.95,
         composition={"H": 0.114, "C": 0.598, "N": 0.007, "O": 0.278, "Na": 0.001, "S": 0.001,
                      "Cl": 0.001},
         source=NIST_TABLE2 + ", Adipose Tissue (ICRU-44)"),
    dict(name="soft tissue", aliases=["tissue", "soft_tissue", "tissue, soft",
                                      "soft tissue (icru-44)"],
         density_g_cm3=1.06,
         composition={"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.708, "Na": 0.002, "P": 0.003,
                      "S": 0.003, "Cl": 0.002, "K": 0.003},
         source=NIST_TABLE2 + ", Tissue, Soft (ICRU-44)"),
    dict(name="muscle", aliases=["skeletal muscle", "muscle, skeletal", "muscle (icru-44)"],
         density_g_cm3=1.05,
         composition={"H": 0.102, "C": 0.143, "N": 0.034, "O": 0.710, "Na": 0.001, "P": 0.002,
                      "S": 0.003, "Cl": 0.001, "K": 0.004},
         source=NIST_TABLE2 + ", Muscle, Skeletal (ICRU-44)"),
    dict(name="water", aliases=["h2o", "liquid water", "water, liquid"], density_g_cm3=1.0,
         composition={"H": 0.111894, "O": 0.888106},
         source="NIST SRD 126 Table 2, Water, Liquid"),
    dict(name="cortical bone", aliases=["bone", "bone, cortical", "cortical bone (icru-44)"],
         density_g_cm3=1.92,
         composition={"H": 0.034, "C": 0.155, "N": 0.042, "O": 0.435, "Na": 0.001, "Mg": 0.002,
                      "P": 0.103, "S": 0.003, "Ca": 0.225},
         source=NIST_TABLE2 + ", Bone, Cortical (ICRU-44)"),
    dict(name="blood", aliases=["whole blood", "blood, whole", "blood (icru-44)"],
         density_g_cm3=1.06,
         composition={"H": 0.102, "C": 0.110, "N": 0.033, "O": 0.745, "Na": 0.001, "P": 0.001,
                      "S": 0.002, "Cl": 0.003, "K": 0.002, "Fe": 0.001},
         source=NIST_TABLE2 + ", Blood, Whole (ICRU-44)"),
    # 10 mg of iodine per mL: 1 mL holds 1.000 g of water and 0.010 g of iodine, the solute's volume
    # and its organic carrier (C, H, N, O of e.g. iohexol, attenuating like water within a few
    # per cent at these fractions) neglected. Density 1.010 g/cm^3, iodine mass fraction
    # 0.010 / 1.010. Iodine dominates the contrast; for another concentration use Material.mixture.
    dict(name="iodine contrast", aliases=["contrast", "iodinated contrast", "contrast agent",
                                          "iodine contrast 10 mg/ml"],
         density_g_cm3=1.010,
         mixture={"water": 1.000 / 1.010, "I": 0.010 / 1.010},
         source="10 mg/mL iodine in water: water 1.000 g + iodine 0.010 g per mL "
                "(solute volume and organic carrier neglected)"),
    dict(name="aluminium", aliases=["al", "aluminum"], density_g_cm3=2.699,
         composition={"Al": 1.0}, source="element; density NIST SRD 126 Table 1"),
    dict(name="copper", aliases=["cu"], density_g_cm3=8.96,
         composition={"Cu": 1.0}, source="element; density NIST SRD 126 Table 1"),
    dict(name="titanium", aliases=["ti"], density_g_cm3=4.54,
         composition={"Ti": 1.0}, source="element; density NIST SRD 126 Table 1"),
    # AISI 316L (ASTM A240): Cr 16-18, Ni 10-14, Mo 2-3, Mn <= 2, Si <= 0.75, C <= 0.03 %;
    # mid-range Cr, Ni, Mo, the maxima for Mn, Si, C, iron the balance. Typical density 8.0.
    dict(name="stainless steel", aliases=["steel", "316l", "ss316l", "stainless steel 316l",
                                          "aisi 316l"],
         density_g_cm3=8.0,
         composition={"Fe": 0.6572, "Cr": 0.170, "Ni": 0.120, "Mo": 0.025, "Mn": 0.020,
                      "Si": 0.0075, "C": 0.0003},
         source="AISI 316L nominal composition (ASTM A240 ranges: mid-range Cr/Ni/Mo, maximum "
                "Mn/Si/C, Fe balance), density 8.0 g/cm3"),
    dict(name="lead", aliases=["pb"], density_g_cm3=11.35,
         composition={"Pb": 1.0}, source="element; density NIST SRD 126 Table 1"),
    dict(name="csi", aliases=["cesium iodide", "caesium iodide"], density_g_cm3=4.51,
         formula="CsI", source="CsI stoichiometry; density NIST SRD 126 Table 2 (Cesium Iodide)"),
    dict(name="pmma", aliases=["acrylic", "perspex", "lucite", "plexiglas", "plexiglass",
                               "polymethyl methacrylate"],
         density_g_cm3=1.19, composition={"H": 0.080538, "C": 0.599848, "O": 0.319614},
         source="NIST SRD 126 Table 2, Polymethyl Methacrylate"),
    dict(name="iodine", aliases=["i"], density_g_cm3=4.93,
         composition={"I": 1.0}, source="element; density NIST SRD 126 Table 1"),
    dict(name="tungsten", aliases=["w"], density_g_cm3=19.3,
         composition={"W": 1.0}, source="element; density NIST SRD 126 Table 1"),
    # AAPM TG-195 (Sechopoulos et al., Med Phys 42(10), 2015) definitions, weight per cent / 100.
    dict(name="tg195 air", aliases=["tg-195 air"], density_g_cm3=0.001205,
         composition={"C": 0.000124, "N": 0.755268, "O": 0.231781, "Ar": 0.012827},
         source="AAPM TG-195 (Sechopoulos et al. 2015) air"),
    dict(name="tg195 soft tissue", aliases=["tg-195 soft tissue"], density_g_cm3=1.03,
         composition={"H": 0.105, "C": 0.256, "N": 0.027, "O": 0.602, "Na": 0.001, "P": 0.002,
                      "S": 0.003, "Cl": 0.002, "K": 0.002},
         source="AAPM TG-195 (Sechopoulos et al. 2015) soft tissue"),
    dict(name="tg195 water", aliases=["tg-195 water"], density_g_cm3=1.0,
         composition={"H": 0.111898, "O": 0.888102},
         source="AAPM TG-195 (Sechopoulos et al. 2015) water"),
    dict(name="tg195 pmma", aliases=["tg-195 pmma"], density_g_cm3=1.19,
         composition={"H": 0.080541, "C": 0.599846, "O": 0.319613},
         source="AAPM TG-195 (Sechopoulos et al. 2015) PMMA"),
    dict(name="tg195 aluminium", aliases=["tg-195 aluminium", "tg195 aluminum"],
         density_g_cm3=2.699, composition={"Al": 1.0},
         source="AAPM TG-195 (Sechopoulos et al. 2015) aluminium"),
]
FRACTION_TOL = 1e-3  # a typed composition must sum to 1 within this before it is normalised


# ----------------------------------------------------------------------------------------------
def loglog_interp(x_new, x, y):
    """Log-log interpolation on nodes sorted by x (duplicate x = edge: the upper node wins)."""
    j = np.clip(np.searchsorted(x, x_new, side="right"), 1, len(x) - 1)
    x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
    t = np.log(x_new / x0) / np.log(x1 / x0)
    return np.exp(np.log(y0) + t * (np.log(y1) - np.log(y0)))


def xraylib_cs(Z, energies_keV):
    """(rayleigh, compton, photoelectric) mass cross sections in cm^2/g at each energy."""
    out = np.empty((3, len(energies_keV)))
    for i, e in enumerate(energies_keV):
        e = float(e)
        out[:, i] = xraylib.CS_Rayl(Z, e), xraylib.CS_Compt(Z, e), xraylib.CS_Photo(Z, e)
    return out


def locate_edges(Z):
    """Absorption edges of element Z in (E_MIN, E_MAX), as found in the ``CS_Photo`` data.

    Away from edges ``CS_Photo`` falls, so a scan with 0.027 % steps flags every rise. Most rises
    are true discontinuities, pinned to machine precision by bisection. A few of xraylib's splines
    instead ramp steeply across the edge (Re M5: 1.8829 to 1.8846 keV, 2 % per 0.1 eV); such a
    ramp (< MAX_RAMP wide) becomes an edge at its start, with the upper branch carried back to it
    along its own log-log slope, and it is excluded from the interpolation checks. Gentle or wide
    rises (near-edge structure; Ta M5-M4, where the data climbs smoothly from 1.735 to 2.000 keV)
    are left to the grid refinement, which follows them like any smooth part of the data. Each edge
    is named after the shell whose ``EdgeEnergy`` is nearest: the data and ``EdgeEnergy`` differ
    by up to 3 % (Ac N2: 1.080 against 1.112 keV), by < 1e-4 for the K shells of Z > 50.
    Rises with a ratio below 1.001 are ignored: there is nothing to keep sharp.

    Returns a list of (shell, EdgeEnergy, e_lo, e_hi, jump ratio): the data follows the lower branch
    up to e_lo and the upper branch from e_hi (e_lo == e_hi for a discontinuity).
    """
    listed = []
    for shell, name in enumerate(SHELL_NAMES):
        try:
            listed.append((name, xraylib.EdgeEnergy(Z, shell)))
        except ValueError:  # shell not occupied for this Z
            continue
    scan = np.geomspace(E_MIN_KEV, E_MAX_KEV, 20001)
    logf = np.log([xraylib.CS_Photo(Z, float(v)) for v in scan])
    steps = np.diff(logf)
    smooth = float(np.median(steps[steps < 0]))

    def bisect(i):
        """Pin the rise in scan step i: (first energy above it, its log size), to machine precision.

        Returns a size of 0 as soon as both halves share the rise (a continuous stretch)."""
        lo, hi, f_lo, f_hi = float(scan[i]), float(scan[i + 1]), logf[i], logf[i + 1]
        while hi - lo > 4 * np.spacing(hi):
            mid = 0.5 * (lo + hi)
            f_mid = np.log(xraylib.CS_Photo(Z, mid))
            if min(f_mid - f_lo, f_hi - f_mid) > 0.25 * (f_hi - f_lo):
                return hi, 0.0
            if abs(f_mid - f_lo) < abs(f_mid - f_hi):
                lo, f_lo = mid, f_mid
            else:
                hi, f_hi = mid, f_mid
        return hi, f_hi - f_lo

    found = []  # (e_lo, e_hi, ratio)
    steep = np.zeros(len(steps), dtype=bool)
    for i in np.flatnonzero(steps > 0):
        e_jump, log_jump = bisect(i)
        if log_jump > 1e-3:  # a discontinuity
            found.append((e_jump, e_jump, float(np.exp(log_jump))))
        else:
            steep[i] = steps[i] > STEEP_STEP
    # Runs of steep steps without a discontinuity: spline ramps across an edge. Gentle rises
    # (near-edge structure such as Zn between L3 and L2) are left to the grid refinement.
    starts = np.flatnonzero(steep & ~np.concatenate([[False], steep[:-1]]))
    for first in starts:
        last = first
        while last + 1 < len(steps) and steep[last + 1]:
            last += 1
        # One more step each side: the ramp may begin or end inside a step that is not steep.
        first, last = max(first - 1, 0), min(last + 1, len(steps) - 1)
        e_lo, e_hi = float(scan[first]), float(scan[last + 1])
        ratio = float(np.exp(logf[last + 1] - logf[first] - smooth * (last + 1 - first)))
        if e_hi <= e_lo * (1.0 + MAX_RAMP):
            found.append((e_lo, e_hi, ratio))
    edges = []
    for e_lo, e_hi, ratio in found:
        if ratio < 1.001:
            continue
        name, e_listed = min(listed, key=lambda t: abs(np.log(t[1] / e_lo)))
        edges.append((name, e_listed, e_lo, e_hi, ratio))
    return sorted(edges, key=lambda t: t[2])


# ----------------------------------------------------------------------------------------------
# Mass energy-absorption coefficient (Hubbell 1982; Seltzer, Radiat. Res. 136, 147 (1993)):
#   mu_en/rho = (1 - g) * [ tau/rho * (1 - X / E)  +  sigma_incoh/rho * <T>/E ]
# tau: photoelectric, X: mean fluorescence energy emitted per photoabsorption, sigma_incoh:
# incoherent, <T>/E: mean fraction of E given to the Compton electron. Coherent scattering
# transfers no energy. g (radiative loss of the secondary electrons) is set to 0: below 200 keV it
# is < 0.1 % for air and water and about 1-2 % for lead at 200 keV.
def fluorescence_per_vacancy(Z):
    """Mean fluorescence energy emitted after a vacancy in each shell, keV, cascade included.

    Filled from the inside out (Y = 0 for N and outer shells):

        Y_M  = omega_M  sum_l r_l E_l                                    (M1..M5)
        Y_L3 = omega_L3 sum_l r_l (E_l + Y_target(l))
        Y_L2 = omega_L2 sum_l r_l (E_l + Y_target(l)) + f23 Y_L3
        Y_L1 = omega_L1 sum_l r_l (E_l + Y_target(l)) + f12 Y_L2 + f13 Y_L3
        Y_K  = omega_K  sum_l r_l (E_l + Y_target(l))

    omega: fluorescence yield (``FluorYield``), r_l: fraction of the radiative transitions that
    go through line l (``RadRate``), E_l: line energy (``LineEnergy``), target(l): the shell the
    line leaves the vacancy in, f: Coster-Kronig probabilities (``CosKronTransProb``). Vacancies
    made by Auger transitions are not followed (for Pb: 3.7 % of K vacancies, about 0.2 % of
    mu_en above the K edge).
    """
    line_re = re.compile(r"^(K|L[1-3]|M[1-5])([KLMNOPQ][1-7]?)_LINE$")
    lines = {shell: [] for shell in FLUORESCENT_SHELLS}
    for macro in dir(xraylib):
        m = line_re.match(macro)
        if m:
            lines[m.group(1)].append((getattr(xraylib, macro), m.group(2)))

    def radiative(shell, y):
        try:
            omega = xraylib.FluorYield(Z, SHELL_NAMES.index(shell))
        except ValueError:  # shell empty or no data for this Z
            return 0.0
        total = 0.0
        for line, target in lines[shell]:
            try:
                total += xraylib.RadRate(Z, line) * (xraylib.LineEnergy(Z, line) + y.get(target, 0.0))
            except ValueError:  # line absent for this Z
                continue
        return omega * total

    def coster_kronig(trans):
        try:
            return xraylib.CosKronTransProb(Z, trans)
        except ValueError:
            return 0.0

    y = {}
    for shell in ("M5", "M4", "M3", "M2", "M1", "L3"):
        y[shell] = radiative(shell, y)
    y["L2"] = radiative("L2", y) + coster_kronig(xraylib.FL23_TRANS) * y["L3"]
    y["L1"] = (radiative("L1", y) + coster_kronig(xraylib.FL12_TRANS) * y["L2"]
               + coster_kronig(xraylib.FL13_TRANS) * y["L3"])
    y["K"] = radiative("K", y)
    return y


def photoabsorption_shell_fractions(Z, edges, energies_keV):
    """Probability that a photoabsorption at E ionises each shell whose edge lies below E.

    P_s(E) = sigma_s(E) / sum_t sigma_t(E), with sigma the subshell photoionisation cross sections
    of xraylib (``CS_Photo_Partial``, Scofield-based) and t running over the shells open at E.
    Unlike the jump-ratio approximation (J - 1) / J, fixed at its edge value, this follows the
    slow rise of the K share with energy (Pb: 0.790 at the edge, 0.810 at 200 keV; 1.5 % of
    mu_en at 150 keV). Which shells are open is decided by the jumps located in the CS_Photo data
    (``edges``); a shell whose data jump lies above E is left out of the sum. The partial cross
    sections have edges of their own, near but not at those jumps (Ta K: 67.59 keV against 67.41),
    so within SHARE_EDGE_MARGIN above the highest open edge the shares are held at their value
    at that margin (they change by < 0.1 % over it). Returns {shell: array over energies}.
    """
    energies_keV = np.asarray(energies_keV, dtype=float)
    all_shells = []
    for shell in range(len(SHELL_NAMES) + 15):  # up to the Q shells
        try:
            e_edge = xraylib.EdgeEnergy(Z, shell)
            xraylib.CS_Photo_Partial(Z, shell, max(1.001 * e_edge, E_MIN_KEV))
        except ValueError:  # shell not occupied, or no partial cross section for it
            continue
        all_shells.append((shell, e_edge))
    located = {SHELL_NAMES.index(name): (e_listed, e_lo) for name, e_listed, e_lo, _, _ in edges}
    wanted = [SHELL_NAMES.index(s) for s in FLUORESCENT_SHELLS]
    fractions = {SHELL_NAMES[s]: np.zeros(len(energies_keV)) for s in wanted if s in located}
    for i, energy in enumerate(energies_keV):
        open_located = [s for s, (_, e_lo) in located.items() if energy > e_lo]
        if not any(s in wanted for s in open_located):
            continue
        e = max([float(energy)] + [located[s][0] * (1.0 + SHARE_EDGE_MARGIN) for s in open_located])
        sigma = {s: xraylib.CS_Photo_Partial(Z, s, e) for s, e_edge in all_shells
                 if (s in open_located or s not in located) and e_edge < e}
        total = sum(sigma.values())
        for s in open_located:
            if s in wanted:
                fractions[SHELL_NAMES[s]][i] = sigma[s] / total
    return fractions


@functools.lru_cache(maxsize=None)
def gauss_legendre(n):
    """Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1]."""
    return np.polynomial.legendre.leggauss(n)


def compton_transfer_fraction(energies_keV, x_grid, s_values):
    """Mean fraction of the photon energy given to the electron in incoherent scattering.

    <T>/E = int dsigma_KN/dOmega S(x,Z) (1 - E'/E) dOmega / int dsigma_KN/dOmega S(x,Z) dOmega,
    E'/E = 1 / (1 + k (1 - cos theta)), k = E / m_e c^2, Klein-Nishina
    dsigma/dOmega ~ (E'/E)^2 (E'/E + E/E' - sin^2 theta), x = sin(theta/2) E / hc.
    S(x, Z) is the binding correction (Waller-Hartree), interpolated log-log in the table.
    """
    mu, w = gauss_legendre(N_SCATTER_ANGLES)
    e = np.asarray(energies_keV)[:, None]
    ratio = 1.0 / (1.0 + e / ELECTRON_REST_KEV * (1.0 - mu))
    kn = ratio**2 * (ratio + 1.0 / ratio - (1.0 - mu**2))
    x = np.sqrt((1.0 - mu) / 2.0) * e / HC_KEV_ANGSTROM
    s = scattering_function_interp(x, x_grid, s_values)
    weight = w * kn * s
    return (weight * (1.0 - ratio)).sum(axis=1) / weight.sum(axis=1)


def scattering_function_interp(x, x_grid, values):
    """Table interpolation shared with run time: linear on [0, x_1], log-log above."""
    x = np.asarray(x, dtype=float)
    out = np.interp(x, x_grid[:2], values[:2])
    above = x >= x_grid[1]
    out[above] = loglog_interp(x[above], x_grid[1:], values[1:])
    return out


def mu_en_over_rho(Z, eval_keV, cs, edges, fluorescence, x_grid, s_values):
    """mu_en/rho in cm^2/g at the energies ``eval_keV`` (cs = xraylib_cs at those energies)."""
    fractions = photoabsorption_shell_fractions(Z, edges, eval_keV)
    x_fluor = sum(p * fluorescence.get(shell, 0.0) for shell, p in fractions.items())
    photo_part = cs[2] * (1.0 - x_fluor / eval_keV)
    compton_part = cs[1] * compton_transfer_fraction(eval_keV, x_grid, s_values)
    return photo_part + compton_part


# ----------------------------------------------------------------------------------------------
def scatter_tables():
    """x grid and F, S for every element, plus midpoint checks against xraylib."""
    n = int(round(np.log10(X_MAX / X_MIN) * X_PER_DECADE)) + 1
    x_log = np.geomspace(X_MIN, X_MAX, n)
    x_grid = np.concatenate([[0.0], x_log])
    x_mid = np.sqrt(x_log[:-1] * x_log[1:])
    ff = np.empty((92, len(x_grid)))
    sf = np.empty((92, len(x_grid)))
    checks = {"Z": [], "x_per_angstrom": [], "form_factor": [], "scattering_function": []}
    worst = 0.0
    for Z in range(1, 93):
        ff[Z - 1] = [float(Z)] + [xraylib.FF_Rayl(Z, float(v)) for v in x_log]
        sf[Z - 1] = [0.0] + [xraylib.SF_Compt(Z, float(v)) for v in x_log]
        f_ref = np.array([xraylib.FF_Rayl(Z, float(v)) for v in x_mid])
        s_ref = np.array([xraylib.SF_Compt(Z, float(v)) for v in x_mid])
        for ref, table in ((f_ref, ff[Z - 1]), (s_ref, sf[Z - 1])):
            err = np.abs(scattering_function_interp(x_mid, x_grid, table) / ref - 1.0)
            worst = max(worst, float(err.max()))
        checks["Z"].append(np.full(len(x_mid), Z))
        checks["x_per_angstrom"].append(x_mid)
        checks["form_factor"].append(f_ref)
        checks["scattering_function"].append(s_ref)
    print(f"F, S: {len(x_grid)} x nodes, worst midpoint interpolation error {100 * worst:.3f} %",
          flush=True)
    if worst > 5e-3:
        sys.exit("form factor / scattering function grid too coarse: raise X_PER_DECADE")
    return x_grid, ff, sf, {k: np.concatenate(v) for k, v in checks.items()}


def element_grid(Z, x_grid, s_values):
    """Refined energy grid of element Z: nodes, values (rayleigh, compton, photo, mu_en), edges,
    and the final interval midpoints with xraylib's values there (the stored checks)."""
    edges = locate_edges(Z)
    fluorescence = fluorescence_per_vacancy(Z)
    e_lo = np.array([e[2] for e in edges])
    e_hi = np.array([e[3] for e in edges])
    n = int(round(np.log10(E_MAX_KEV / E_MIN_KEV) * POINTS_PER_DECADE)) + 1
    base = np.geomspace(E_MIN_KEV, E_MAX_KEV, n)
    if len(edges):
        near = np.min(np.abs(base[:, None] / e_lo[None, :] - 1.0), axis=1) < 1e-3
        base = base[~near]

    def values(ev):
        cs = xraylib_cs(Z, ev)
        mu_en = mu_en_over_rho(Z, ev, cs, edges, fluorescence, x_grid, s_values)
        return np.vstack([cs, mu_en[None, :]])

    # Edge pairs: below = the data just under e_lo; above = the upper branch from e_hi carried
    # back to e_lo along its log-log slope (no change for a discontinuity, e_lo == e_hi).
    below = values(e_lo * (1.0 - 1e-9))
    up1, up2 = values(e_hi * (1.0 + 1e-9)), values(e_hi * (1.0 + 1e-4))
    slope = np.log(up2 / up1) / np.log((1.0 + 1e-4) / (1.0 + 1e-9))
    above = up1 * (e_lo / (e_hi * (1.0 + 1e-9))) ** slope

    def in_ramp(e):
        return np.any((e[:, None] >= e_lo[None, :]) & (e[:, None] <= e_hi[None, :]), axis=1)

    free = base
    for _ in range(12):
        nodes = np.concatenate([free, e_lo, e_lo])
        vals = np.concatenate([values(free), below, above], axis=1)
        order = np.argsort(nodes, kind="stable")  # stable: 'below' precedes 'above'
        nodes, vals = nodes[order], vals[:, order]
        width = np.diff(nodes)
        idx = np.flatnonzero(width > 0)
        mid = np.sqrt(nodes[idx] * nodes[idx + 1])
        mid = mid[~in_ramp(mid)] if len(edges) else mid
        ref = values(mid)
        interp = np.vstack([loglog_interp(mid, nodes, v) for v in vals])
        bad = np.any(np.abs(interp / ref - 1.0) > REFINE_TOL, axis=0)
        if not bad.any():
            return nodes, vals, edges, mid, ref
        free = np.sort(np.concatenate([free, mid[bad]]))
    sys.exit(f"Z={Z}: energy grid refinement did not converge")


# ----------------------------------------------------------------------------------------------
def atomic_weights():
    """Standard atomic weights (g/mol) of Z = 1..92.

    From spekpy's ``atwts.dat`` (the IUPAC values NIST SRD 126 used, e.g. H 1.00794); xraylib's
    ``AtomicWeight`` is rounded to 0.01 (H 1.01). Cross-checked against xraylib within 0.5 %
    (catches a misread table; H differs by 0.2 % through xraylib's rounding).
    """
    import spekpy

    path = Path(spekpy.__file__).parent / "data" / "tables" / "atwts.dat"
    table = json.loads(path.read_text())["atwts"]
    by_z = {int(z): float(a) for z, a in table.values()}
    weights = np.array([by_z[z] for z in range(1, 93)])
    # No stable isotope (the mass number is a convention), and Tm, for which xraylib 4.3 lists
    # 167.27 (erbium's weight; the standard value is 168.934).
    skip = {43, 61, 84, 85, 86, 87, 88, 89, 69}
    for z, a in enumerate(weights, start=1):
        if z not in skip and abs(a / xraylib.AtomicWeight(z) - 1.0) > 5e-3:
            sys.exit(f"atomic weight of Z={z}: {a} vs xraylib {xraylib.AtomicWeight(z)}")
    return weights


def build_materials(symbols, weights):
    """Material entries with normalised mass fractions (see MATERIALS)."""
    by_name = {}
    out = []
    for spec in MATERIALS:
        if "formula" in spec:
            parsed = xraylib.CompoundParser(spec["formula"])
            mass = {symbols[z - 1]: n * weights[z - 1]
                    for z, n in zip(parsed["Elements"], parsed["nAtoms"])}
            total = sum(mass.values())
            comp = {s: m / total for s, m in mass.items()}
        elif "mixture" in spec:
            comp = {}
            for part, frac in spec["mixture"].items():
                sub = by_name[part]["composition"] if part in by_name else {part: 1.0}
                for s, w in sub.items():
                    comp[s] = comp.get(s, 0.0) + frac * w
        else:
            comp = dict(spec["composition"])
        total = sum(comp.values())
        if abs(total - 1.0) > FRACTION_TOL:
            sys.exit(f"material {spec['name']!r}: mass fractions sum to {total}")
        unknown = set(comp) - set(symbols)
        if unknown:
            sys.exit(f"material {spec['name']!r}: unknown elements {sorted(unknown)}")
        entry = dict(name=spec["name"], aliases=spec["aliases"],
                     density_g_cm3=spec["density_g_cm3"],
                     composition={s: comp[s] / total for s in comp}, source=spec["source"])
        by_name[entry["name"]] = entry
        out.append(entry)
    return out


def validate_mu_en(symbols, energy_offsets, energy, mu_en, materials):
    """Print mu_en/rho of air and water against NIST SRD 126 (as shipped with spekpy)."""
    import spekpy

    tables = Path(spekpy.__file__).parent / "data" / "tables"
    for name, fname in (("air", "nist_muen_air.dat"), ("water", "nist_muen_water.dat")):
        data = json.loads((tables / fname).read_text())
        e_nist = 1000.0 * np.array(data["photon energy"])
        v_nist = np.array(data[f"muen_over_rho_{name}"])
        keep = (e_nist >= 15.0) & (e_nist <= 150.0)
        comp = next(m for m in materials if m["name"] == name)["composition"]
        ours = np.zeros(keep.sum())
        for sym, w in comp.items():
            z = symbols.index(sym)
            sl = slice(energy_offsets[z], energy_offsets[z + 1])
            ours += w * loglog_interp(e_nist[keep], energy[sl], mu_en[sl])
        dev = 100.0 * (ours / v_nist[keep] - 1.0)
        row = ", ".join(f"{e:g}:{d:+.2f}%" for e, d in zip(e_nist[keep], dev))
        print(f"mu_en/rho {name} vs NIST SRD 126 (15-150 keV): {row}")


def main():
    symbols = [xraylib.AtomicNumberToSymbol(z) for z in range(1, 93)]
    weights = atomic_weights()
    densities = np.array([xraylib.ElementDensity(z) for z in range(1, 93)])
    x_grid, ff, sf, scatter_checks = scatter_tables()

    energy, kinds, offsets = [], [], [0]
    edge_rows, checks = [], []
    worst_total = 0.0
    for Z in range(1, 93):
        nodes, vals, edges, mid, ref = element_grid(Z, x_grid, sf[Z - 1])
        energy.append(nodes)
        kinds.append(vals)
        offsets.append(offsets[-1] + len(nodes))
        edge_rows += [(Z, name, e_x, e_l, ratio) for name, e_x, e_l, _, ratio in edges]
        checks.append((np.full(len(mid), Z), mid, ref))
        probe = nodes[np.diff(nodes, append=np.inf) > 0][::7]
        total_x = np.array([xraylib.CS_Total(Z, float(e)) for e in probe])
        ours = xraylib_cs(Z, probe).sum(axis=0)
        worst_total = max(worst_total, float(np.max(np.abs(ours / total_x - 1.0))))
    worst_mid = max(float(np.max(np.abs(
        loglog_interp(c[1], energy[z], kinds[z][k]) / c[2][k] - 1.0)))
        for z, c in enumerate(checks) for k in range(4))
    print(f"log-log interpolation vs xraylib at all {sum(len(c[1]) for c in checks)} interval "
          f"midpoints: worst {100 * worst_mid:.3f} %")
    if worst_mid > 5e-3:
        sys.exit("energy grid too coarse: interpolation error above 0.5 %")
    energy = np.concatenate(energy)
    kinds = np.concatenate(kinds, axis=1)
    offsets = np.array(offsets, dtype=np.int64)
    print(f"energy grids: {len(energy)} nodes for 92 elements "
          f"({len(energy) / 92:.0f} per element), {len(edge_rows)} edges")
    print(f"rayleigh + compton + photoelectric vs CS_Total: worst {100 * worst_total:.2e} %")

    materials = build_materials(symbols, weights)
    validate_mu_en(symbols, offsets, energy, kinds[3], materials)

    created = datetime.date.today().isoformat()
    h5_path = OUT_DIR / "elements.h5"
    tmp = h5_path.with_suffix(".h5.tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs.update({
            "format_version": FORMAT_VERSION,
            "source": f"xraylib {xraylib.__version__}",
            "created": created,
            "regenerate": "python physics_data/build_tables.py",
            "energy_grid": (f"per element: log grid {E_MIN_KEV:g}-{E_MAX_KEV:g} keV, "
                            f"{POINTS_PER_DECADE}/decade refined until log-log interpolation is "
                            f"within {REFINE_TOL:g} of xraylib at every interval midpoint; each "
                            "absorption edge as two nodes at the same energy (below, above)"),
            "x_grid": (f"x = sin(theta/2)/lambda in 1/Angstrom: 0, then log grid {X_MIN:g}-"
                       f"{X_MAX:g} with {X_PER_DECADE}/decade; linear on [0, x1], log-log above"),
            "mu_en_method": ("tau*(1 - X/E) + sigma_incoh*<T>/E; X: subshell shares from "
                             "CS_Photo_Partial times fluorescence per vacancy "
                             "(FluorYield, RadRate, LineEnergy, Coster-Kronig, K-L-M radiative "
                             "cascade); <T>/E: Klein-Nishina x S(x,Z); radiative loss g = 0"),
            "units": "energy keV, cross sections cm^2/g, x 1/Angstrom, density g/cm^3",
        })
        el = f.create_group("elements")
        el["Z"] = np.arange(1, 93, dtype=np.int32)
        el["symbol"] = np.array(symbols, dtype="S2")
        el["atomic_weight_g_mol"] = weights
        el["density_g_cm3"] = densities
        en = f.create_group("energy")
        en["offsets"] = offsets
        en["energy_keV"] = energy
        for i, kind in enumerate(KINDS):
            en[kind] = kinds[i]
        en["total"] = kinds[:3].sum(axis=0)
        en["mu_en"] = kinds[3]
        ed = f.create_group("edges")
        ed["Z"] = np.array([r[0] for r in edge_rows], dtype=np.int32)
        ed["shell"] = np.array([r[1] for r in edge_rows], dtype="S2")
        ed["energy_xraylib_keV"] = np.array([r[2] for r in edge_rows])
        ed["energy_keV"] = np.array([r[3] for r in edge_rows])
        ed["jump_ratio"] = np.array([r[4] for r in edge_rows])
        sc = f.create_group("scatter")
        sc["x_per_angstrom"] = x_grid
        sc["form_factor"] = ff
        sc["scattering_function"] = sf
        ck = f.create_group("checks")
        ck["Z"] = np.concatenate([c[0] for c in checks]).astype(np.int32)
        ck["energy_keV"] = np.concatenate([c[1] for c in checks])
        ref = np.concatenate([c[2] for c in checks], axis=1)
        for i, kind in enumerate(KINDS):
            ck[kind] = ref[i]
        ck["total"] = ref[:3].sum(axis=0)
        ck["mu_en"] = ref[3]
        cs = ck.create_group("scatter")
        for key, val in scatter_checks.items():
            cs[key] = val
    tmp.replace(h5_path)

    json_path = OUT_DIR / "materials.json"
    doc = {"format_version": FORMAT_VERSION, "created": created,
           "regenerate": "python physics_data/build_tables.py",
           "units": "density g/cm^3, composition: mass fraction by element symbol",
           "materials": materials}
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(json_path)
    for p in (h5_path, json_path):
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
