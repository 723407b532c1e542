"""Batched conjugate gradients for (G + ηI)·z = r with a symmetric positive (semi-)definite G.

Used where AAᵀ has no closed-form inverse (super-resolution restricted to a measurement mask).
The solve is wrapped in an autograd Function whose backward is another solve (G is symmetric),
so gradients are exact and do not store the iterations.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

MAX_ITERATIONS = 500


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-13 if dtype == torch.float64 else 1e-6


def _cg(apply_gram: Callable[[torch.Tensor], torch.Tensor], r: torch.Tensor, eta: float) -> torch.Tensor:
    """Solve per batch element; r is [N, ...] and every reduction runs over the non-batch dims."""
    dims = tuple(range(1, r.ndim))
    shape = (-1,) + (1,) * (r.ndim - 1)
    z = torch.zeros_like(r)
    res = r.clone()
    p = res.clone()
    rs = (res * res).sum(dims)
    stop = (_tolerance(r.dtype) * rs.sqrt()) ** 2
    for _ in range(MAX_ITERATIONS):
        if bool((rs <= stop).all()):
            return z
        gp = apply_gram(p) + eta * p
        pgp = (p * gp).sum(dims)
        alpha = torch.where(pgp > 0, rs / torch.where(pgp > 0, pgp, torch.ones_like(pgp)), torch.zeros_like(pgp))
        z = z + alpha.view(shape) * p
        res = res - alpha.view(shape) * gp
        rs_new = (res * res).sum(dims)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = res + beta.view(shape) * p
        rs = rs_new
    warnings.warn("conjugate gradients did not reach its tolerance", RuntimeWarning, stacklevel=3)
    return z


class _GramSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, apply_gram, eta):
        ctx.apply_gram = apply_gram
        ctx.eta = eta
        with torch.no_grad():
            return _cg(apply_gram, r, eta)

    @staticmethod
    def backward(ctx, grad):
        with torch.no_grad():
            return _cg(ctx.apply_gram, grad.contiguous(), ctx.eta), None, None


def gram_solve(apply_gram: Callable[[torch.Tensor], torch.Tensor], r: torch.Tensor, eta: float) -> torch.Tensor:
    """(G + ηI)⁻¹·r by conjugate gradients; with eta = 0, r must lie in range(G) (then: minimum-norm z)."""
    return _GramSolve.apply(r, apply_gram, float(eta))
