"""Fixed-point solvers and the implicit gradient, on linear contractions whose answers are known."""

from __future__ import annotations

import pytest
import torch

from diffplan.errors import BadInputError
from diffplan.models.deq import anderson, check_solver, fixed_point, forward_iteration


def linear_problem(batch: int = 3, n: int = 6, contraction: float = 0.9, seed: int = 0):
    """``z = A z + b`` with ||A||_2 = contraction per batch element; fixed point (I - A)^-1 b."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=gen, dtype=torch.float64)
    a = contraction * a / torch.linalg.matrix_norm(a, ord=2)[:, None, None]
    b = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - a, b)
    return a, b, exact


def apply(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bij,bj->bi", a, z)


@pytest.mark.parametrize("solver", [forward_iteration, anderson])
def test_solvers_converge_on_a_contraction(solver):
    a, b, exact = linear_problem()
    result = solver(lambda z: apply(a, z) + b, torch.zeros_like(b), tol=1e-10, max_iter=500)
    assert result.residual < 1e-10
    torch.testing.assert_close(result.z, exact, rtol=1e-8, atol=1e-8)


def test_anderson_needs_fewer_iterations_than_plain_iteration():
    """A symmetric map with eigenvalues spread over [-0.95, 0.95]: plain iteration needs ~300 steps."""
    gen = torch.Generator().manual_seed(0)
    n = 20
    q, _ = torch.linalg.qr(torch.randn(2, n, n, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-0.95, 0.95, n, dtype=torch.float64)) @ q.transpose(1, 2)
    b = torch.randn(2, n, generator=gen, dtype=torch.float64)
    f = lambda z: apply(a, z) + b  # noqa: E731
    plain = forward_iteration(f, torch.zeros_like(b), tol=1e-8, max_iter=1000)
    fast = anderson(f, torch.zeros_like(b), tol=1e-8, max_iter=1000)
    assert fast.residual < 1e-8 and fast.iterations < plain.iterations / 3


def test_solvers_stop_at_max_iter():
    a, b, _ = linear_problem(contraction=0.99)
    result = forward_iteration(lambda z: apply(a, z) + b, torch.zeros_like(b), tol=0.0, max_iter=7)
    assert result.iterations == 7 and result.residual > 0


@pytest.mark.parametrize("backward_solver", ["forward", "anderson"])
def test_implicit_gradient_is_exact_on_a_linear_map(backward_solver):
    """d/db <c, z*(b)> = (I - A)^-T c, and the same for A through the one differentiable step."""
    a, b, exact = linear_problem()
    b = b.clone().requires_grad_()
    c = torch.randn_like(exact)
    stats: dict[str, float] = {}
    z = fixed_point(
        lambda z: apply(a, z) + b,
        torch.zeros_like(exact),
        tol=1e-12,
        max_iter=500,
        backward_solver=backward_solver,
        backward_tol=1e-12,
        backward_max_iter=500,
        stats=stats,
    )
    torch.testing.assert_close(z, exact)
    (z * c).sum().backward()
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    expected = torch.linalg.solve((eye - a).transpose(1, 2), c)
    torch.testing.assert_close(b.grad, expected, rtol=1e-8, atol=1e-8)
    assert stats["forward_residual"] < 1e-12 and stats["backward_residual"] < 1e-12
    assert stats["forward_iterations"] >= 1 and stats["backward_iterations"] >= 1


def test_no_graph_no_hook():
    a, b, exact = linear_problem()
    with torch.no_grad():
        z = fixed_point(lambda z: apply(a, z) + b, torch.zeros_like(b), tol=1e-10, max_iter=500)
    assert not z.requires_grad
    torch.testing.assert_close(z, exact)


@pytest.mark.parametrize("name", ["broyden", ""])
def test_unknown_solver_is_refused(name):
    with pytest.raises(BadInputError, match="solver"):
        check_solver(name)
    assert check_solver("none", backward=True) == "none"
