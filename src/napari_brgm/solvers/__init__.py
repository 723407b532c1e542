"""Solvers: estimate an image from a measurement y = A·x with a generative prior.

Each solver works in the generator's units ([-1, 1]) on tensors; the engine maps intensities and
geometry around it. MAP and VI are BRGM's (Marinescu et al.); see docs/engine.md.
"""

from napari_brgm.solvers.map import MapConfig, MapOutput, solve_map
from napari_brgm.solvers.monitor import Monitor
from napari_brgm.solvers.problem import Problem
from napari_brgm.solvers.vi import ViConfig, ViOutput, solve_vi

__all__ = ["MapConfig", "MapOutput", "Monitor", "Problem", "ViConfig", "ViOutput", "solve_map", "solve_vi"]
