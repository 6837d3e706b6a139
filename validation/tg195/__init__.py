"""AAPM TG-195 Cases 1 and 2: HVL/QVL air-kerma ratios vs 4 codes, energy deposited in a soft-tissue box.

Case 1 (``case1.py``): air-kerma ratios behind the HVL and QVL of aluminium for 30 keV, 100 keV and RQR-8,
compared with EGSnrc, Geant4, MCNP and Penelope. Case 2 (``case2.py``): energy deposited in a 39 x 39 x
20 cm soft-tissue box and in its nine VOIs, eV per emitted photon, for 56.4 keV and RQR-9. Reference:
AAPM Report 195 (Sechopoulos et al., Med Phys 42, 5679 (2015)); /work/shared/reference/tg195.md.

Run: ``xsim validate tg195 [--quick]``, or one case: ``python -m validation.tg195.case1 [--quick]``.
"""
from __future__ import annotations

import os

from ..mc_common import DEFAULT_OUT_DIR


def main(out_dir: str | os.PathLike = DEFAULT_OUT_DIR, quick: bool = False) -> bool:
    """Run Case 1 and Case 2 into ``out_dir``; True when both pass."""
    # imported here, so that ``python -m validation.tg195.case1`` does not import case1 twice
    from . import case1, case2

    passed = [case1.main(out_dir, quick), case2.main(out_dir, quick)]
    return all(passed)
