"""The contract every registered forward model honours, checked on the same configurations.

Each property is checked against an explicit dense matrix where that is the reference (the
pseudo-inverse against numpy's SVD-based pinv, the regularised back-projection against the
textbook formula), and everything runs in float64 so 1e-10 tolerances are meaningful.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brgm.operators import OPERATORS, MaskedOperator

from .cases import CASES

IDS = [c[0] for c in CASES]
REL = 1e-10


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    _, factory, shape = request.param
    return factory(), shape


def rand(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def out_shape(op, shape):
    return (shape[0], shape[1] * op.channel_stride) + tuple(op.output_shape(shape[2:]))


def close(a, b, rel=REL):
    scale = max(float(b.abs().max()), 1.0)
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max())


def per_sample_mask(op):
    """True when the operator holds one mask per batch element (then tests keep the full batch)."""
    observed = getattr(op, "observed", None)
    return observed is not None and observed.shape[0] > 1


def dense(fn, in_shape):
    """The matrix of a linear map on tensors of `in_shape`, one basis vector at a time."""
    n = int(np.prod(in_shape))
    cols = []
    for j in range(n):
        e = torch.zeros(n, dtype=torch.float64)
        e[j] = 1
        cols.append(fn(e.view(in_shape)).reshape(-1))
    return torch.stack(cols, dim=1).numpy()


def dense_pair(op, shape):
    """(A, A⁺) as dense matrices; A is built row by row from the adjoint."""
    yshape = out_shape(op, shape)
    a = dense(op.adjoint, yshape).T
    p = dense(op.pseudo_inverse, yshape)
    return a, p


def test_every_registered_operator_is_covered():
    covered = {type(c[1]()) for c in CASES}
    covered |= {type(c[1]().inner) for c in CASES if isinstance(c[1](), MaskedOperator)}
    assert set(OPERATORS.values()) <= covered


def test_shapes(case):
    op, shape = case
    x = rand(shape, 0)
    y = op(x)
    assert tuple(y.shape) == out_shape(op, shape)
    assert op.adjoint(y).shape == x.shape
    assert op.pseudo_inverse(y).shape == x.shape
    assert op.back_project(x, y).shape == x.shape
    assert op.back_project(x, y, eta=0.3).shape == x.shape


def test_adjointness(case):
    op, shape = case
    x, y = rand(shape, 1), rand(out_shape(op, shape), 2)
    lhs = float((op(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    assert abs(lhs - rhs) <= REL * float(op(x).norm() * y.norm())


def test_penrose_identities(case):
    op, shape = case
    x, y = rand(shape, 3), rand(out_shape(op, shape), 4)
    close(op(op.pseudo_inverse(op(x))), op(x))
    close(op.pseudo_inverse(op(op.pseudo_inverse(y))), op.pseudo_inverse(y))


def test_pseudo_inverse_matches_dense_pinv(case):
    op, shape = case
    if not per_sample_mask(op):
        shape = (1, 1) + shape[2:]
    a, p = dense_pair(op, shape)
    np.testing.assert_allclose(p, np.linalg.pinv(a, rcond=1e-10), atol=1e-10 * max(1.0, np.abs(p).max()))


def test_project_measurement_is_a_pinv(case):
    op, shape = case
    y = rand(out_shape(op, shape), 5)
    close(op.project_measurement(y), op(op.pseudo_inverse(y)))


def test_back_projection_is_data_consistent(case):
    op, shape = case
    x_true, x0 = rand(shape, 6), rand(shape, 7)
    y = op(x_true)
    close(op(op.back_project(x0, y)), y)
    noisy = rand(out_shape(op, shape), 8)
    close(op(op.back_project(x0, noisy)), op.project_measurement(noisy))


def test_regularised_back_projection_matches_formula(case):
    op, shape = case
    if not per_sample_mask(op):
        shape = (1, 1) + shape[2:]
    a = dense(op.forward, shape)
    x0, y = rand(shape, 9), op(rand(shape, 10))
    xv, yv = x0.reshape(-1).numpy(), y.reshape(-1).numpy()
    residuals = []
    for eta in (1.0, 0.1, 0.01):
        want = xv + a.T @ np.linalg.solve(a @ a.T + eta * np.eye(len(yv)), yv - a @ xv)
        got = op.back_project(x0, y, eta=eta)
        np.testing.assert_allclose(got.reshape(-1).numpy(), want, atol=1e-9)
        residuals.append(float((op(got) - y).norm()))
    start = float((op(x0) - y).norm())
    assert start > residuals[0] > residuals[1] > residuals[2] > float((op(op.back_project(x0, y)) - y).norm())


def test_gradients_are_the_adjoint(case):
    """The solvers backpropagate through A and A⁺: autograd must give Aᵀ and (A⁺)ᵀ."""
    op, shape = case
    x = rand(shape, 11).requires_grad_()
    v = rand(out_shape(op, shape), 12)
    (op(x) * v).sum().backward()
    close(x.grad, op.adjoint(v))

    y = rand(out_shape(op, shape), 13).requires_grad_()
    u = rand(shape, 14)
    (op.pseudo_inverse(y) * u).sum().backward()
    # <A⁺y, u> = <y, (A⁺)ᵀu>; check against the pairing with a second random y
    y2 = rand(out_shape(op, shape), 15)
    lhs = float((y.grad * y2).sum())
    rhs = float((op.pseudo_inverse(y2) * u).sum())
    assert abs(lhs - rhs) <= REL * max(1.0, abs(rhs)) * 10


def test_batch_and_channels_are_independent(case):
    op, shape = case
    x = rand(shape, 16)
    y = op(x)
    n, c = shape[:2]
    s = op.channel_stride  # image channel k has the measurement channels [k·s, (k+1)·s)
    for i in range(n):
        for k in range(c):
            ch = slice(k * s, (k + 1) * s)
            if per_sample_mask(op):
                xi = torch.zeros_like(x)
                xi[i, k] = x[i, k]
                close(op(xi)[i, ch], y[i, ch])
            else:
                close(op(x[i : i + 1, k : k + 1])[0], y[i, ch])
    yb = rand(y.shape, 17)
    for i in range(n):
        for k in range(c):
            if not per_sample_mask(op):
                ch = slice(k * s, (k + 1) * s)
                close(op.pseudo_inverse(yb[i : i + 1, ch])[0, 0], op.pseudo_inverse(yb)[i, k])
                close(op.adjoint(yb[i : i + 1, ch])[0, 0], op.adjoint(yb)[i, k])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(case, dtype):
    op, shape = case
    x = rand(shape, 18, dtype)
    y = op(x)
    outs = [y, op.adjoint(y), op.pseudo_inverse(y), op.back_project(x, y), op.back_project(x, y, 0.5)]
    assert all(t.dtype == dtype for t in outs)
    ref = op.pseudo_inverse(op(x.double()))
    assert torch.allclose(op.pseudo_inverse(y).double(), ref, atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_preserved():
    for _, factory, shape in CASES:
        op = factory().to("cuda")
        x = rand(shape, 19).cuda()
        y = op(x)
        for t in (y, op.adjoint(y), op.pseudo_inverse(y), op.back_project(x, y, 0.1)):
            assert t.device == x.device


SMALL = ["box-f2", "bicubic-f3", "inpaint-rect", "denoise", "masked-box-f2", "masked-bicubic-f4", "kspace-odd",
         "blur-gaussian"]


@pytest.mark.parametrize("case_id", SMALL)
def test_gradcheck(case_id):
    _, factory, shape = CASES[IDS.index(case_id)]
    op = factory()
    shape = (1, 1) + shape[2:]
    x = rand(shape, 20).requires_grad_()
    y = op(rand(shape, 21)).detach().requires_grad_()
    assert torch.autograd.gradcheck(op.forward, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.adjoint, (y,), fast_mode=True)
    assert torch.autograd.gradcheck(op.pseudo_inverse, (y,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: op.back_project(a, b, eta=0.2), (x, y), fast_mode=True)
