"""Solvers: estimate an image from a measurement y = A·x with a generative prior.

Each solver works in the generator's units ([-1, 1]) on tensors; the engine maps intensities and
geometry around it. MAP and VI are BRGM's (Marinescu et al.); CSGM (Bora et al.), IAGAN (Abu
Hussein et al.) and Deep Image Prior (Ulyanov et al.) are the field's other priors; back-projection
is a post-step for all of them. See docs/engine.md.
"""

from napari_brgm.solvers.backproject import back_project
from napari_brgm.solvers.csgm import CsgmConfig, CsgmOutput, solve_csgm
from napari_brgm.solvers.dip import DipConfig, DipOutput, solve_dip
from napari_brgm.solvers.iagan import IaganConfig, IaganOutput, solve_iagan
from napari_brgm.solvers.map import MapConfig, MapOutput, solve_map
from napari_brgm.solvers.monitor import Monitor
from napari_brgm.solvers.problem import Problem
from napari_brgm.solvers.vi import ViConfig, ViOutput, solve_vi

__all__ = [
    "CsgmConfig", "CsgmOutput", "DipConfig", "DipOutput", "IaganConfig", "IaganOutput", "MapConfig", "MapOutput",
    "Monitor", "Problem", "ViConfig", "ViOutput", "back_project", "solve_csgm", "solve_dip", "solve_iagan",
    "solve_map", "solve_vi",
]
