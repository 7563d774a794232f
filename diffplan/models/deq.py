"""Fixed-point solvers and implicit differentiation for deep-equilibrium (DEQ) planners.

A DEQ planner defines its output as a fixed point ``z* = f(z*)`` of a layer ``f`` (a value-iteration
step, a message-passing step ...). :func:`fixed_point` finds ``z*`` without building an autograd graph,
re-attaches it to the graph with one differentiable application of ``f``, and replaces backpropagation
through the solver iterations by the implicit function theorem (Bai et al., "Deep Equilibrium Models",
2019): the gradient ``dL/dz*`` is turned into the solution ``g`` of the backward fixed-point equation

    g = J_f(z*)^T g + dL/dz*,

which a backward hook solves with the same kind of solver. Memory no longer grows with the number of
iterations. For the solvers to converge, ``f`` should be a contraction (e.g. a VI step with discount
``gamma < 1``); then ``J_f^T`` is a contraction too and both equations have unique solutions.

Solvers work on tensors with a leading batch dimension: every batch element is its own fixed-point
problem (Anderson mixes each element's history separately) and iteration stops when the *largest*
per-element relative residual ``||f(z) - z|| / ||f(z)||`` is below ``tol``. Graph planners whose nodes
from several graphs form one system can pass ``z[None]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import autograd

from diffplan.errors import BadInputError

Fn = Callable[[torch.Tensor], torch.Tensor]
_EPS = 1e-8


@dataclass
class SolverResult:
    """What a solver found: the fixed point, iterations used (applications of ``f``), final residual."""

    z: torch.Tensor
    iterations: int
    residual: float  # max over the batch of ||f(z) - z|| / (||f(z)|| + eps)


def _residual(fz: torch.Tensor, z: torch.Tensor) -> float:
    diff = (fz - z).flatten(1).norm(dim=1)
    return (diff / (fz.flatten(1).norm(dim=1) + _EPS)).max().item()


def forward_iteration(f: Fn, z0: torch.Tensor, *, tol: float = 1e-4, max_iter: int = 50) -> SolverResult:
    """Plain fixed-point iteration ``z <- f(z)`` until the residual is below ``tol`` or ``max_iter``."""
    z, res = z0, float("inf")
    for it in range(1, max_iter + 1):
        fz = f(z)
        res = _residual(fz, z)
        z = fz
        if res < tol:
            return SolverResult(z, it, res)
    return SolverResult(z, max_iter, res)


def anderson(
    f: Fn,
    z0: torch.Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 50,
    m: int = 5,
    beta: float = 1.0,
    lam: float | None = None,
) -> SolverResult:
    """Anderson acceleration (type II) of the iteration ``z <- f(z)``.

    Each step mixes the last ``m`` iterates with the weights ``alpha`` that minimise the norm of the
    combined residual ``sum_i alpha_i (f(z_i) - z_i)`` subject to ``sum_i alpha_i = 1``. ``lam`` is a
    Tikhonov term relative to the mean squared residual (default: 100 machine epsilons of the dtype,
    enough to keep the small least-squares system well posed without slowing convergence); ``beta``
    damps (1 = undamped). Returns the iterate with the smallest residual seen.
    """
    if lam is None:
        lam = 100 * torch.finfo(z0.dtype).eps
    bsz = z0.shape[0]
    shape, dtype, device = z0.shape, z0.dtype, z0.device
    x_hist = torch.zeros(bsz, m, z0[0].numel(), dtype=dtype, device=device)
    f_hist = torch.zeros_like(x_hist)
    x_hist[:, 0] = z0.reshape(bsz, -1)
    f_hist[:, 0] = f(z0).reshape(bsz, -1)
    best = SolverResult(f_hist[:, 0].reshape(shape).clone(), 1, _residual(f_hist[:, 0], x_hist[:, 0]))
    if best.residual < tol or max_iter <= 1:
        return best
    x_hist[:, 1] = f_hist[:, 0]
    f_hist[:, 1] = f(x_hist[:, 1].reshape(shape)).reshape(bsz, -1)
    res = _residual(f_hist[:, 1], x_hist[:, 1])
    if res < best.residual:
        best = SolverResult(f_hist[:, 1].reshape(shape).clone(), 2, res)
    h_mat = torch.zeros(bsz, m + 1, m + 1, dtype=dtype, device=device)
    h_mat[:, 0, 1:] = h_mat[:, 1:, 0] = 1
    rhs = torch.zeros(bsz, m + 1, 1, dtype=dtype, device=device)
    rhs[:, 0] = 1
    for it in range(3, max_iter + 1):
        if best.residual < tol:
            break
        n = min(it - 1, m)
        g = f_hist[:, :n] - x_hist[:, :n]
        gram = torch.bmm(g, g.transpose(1, 2))
        # Scale the regulariser with the residuals so it neither vanishes nor dominates near convergence.
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(_EPS)[:, None, None]
        h_mat[:, 1 : n + 1, 1 : n + 1] = gram + lam * scale * torch.eye(n, dtype=dtype, device=device)
        alpha = torch.linalg.solve(h_mat[:, : n + 1, : n + 1], rhs[:, : n + 1])[:, 1 : n + 1, 0]
        k = (it - 1) % m
        mixed_f = (alpha[:, None] @ f_hist[:, :n])[:, 0]
        x_hist[:, k] = (
            mixed_f if beta == 1.0 else beta * mixed_f + (1 - beta) * (alpha[:, None] @ x_hist[:, :n])[:, 0]
        )
        f_hist[:, k] = f(x_hist[:, k].reshape(shape)).reshape(bsz, -1)
        res = _residual(f_hist[:, k], x_hist[:, k])
        if res < best.residual:
            best = SolverResult(f_hist[:, k].reshape(shape).clone(), it, res)
        else:
            best.iterations = it
    return best


SOLVERS: dict[str, Callable[..., SolverResult]] = {"forward": forward_iteration, "anderson": anderson}
BACKWARD_MODES: tuple[str, ...] = (*SOLVERS, "none")


def check_solver(name: str, *, backward: bool = False) -> str:
    """``name`` if it is a known solver ("forward", "anderson"; backward also "none"), else BadInputError."""
    valid = BACKWARD_MODES if backward else tuple(SOLVERS)
    if name not in valid:
        role = "backward solver" if backward else "solver"
        raise BadInputError(f"unknown DEQ {role} {name!r}; use one of {', '.join(valid)}.")
    return name


def fixed_point(
    f: Fn,
    z0: torch.Tensor,
    *,
    solver: str = "anderson",
    tol: float = 1e-4,
    max_iter: int = 50,
    backward_solver: str = "anderson",
    backward_tol: float = 1e-4,
    backward_max_iter: int = 50,
    f_detached: Fn | None = None,
    stats: dict[str, float] | None = None,
) -> torch.Tensor:
    """The fixed point ``z* = f(z*)``, differentiable through the implicit function theorem.

    Args:
        f: the layer; a differentiable function of ``z`` that closes over its other inputs/parameters.
        z0: initial guess (its values only; it is not differentiated).
        solver, tol, max_iter: forward solver ("forward" or "anderson") and its stopping rule.
        backward_solver: solver of the backward equation ``g = J^T g + grad`` ("forward", "anderson"), or
            "none" for the Jacobian-free one-step gradient (``g = grad``; cheaper, approximate).
        backward_tol, backward_max_iter: stopping rule of the backward solve.
        f_detached: optional, the same map with its parameters detached from the graph; used for the
            vector-Jacobian products of the backward solve so that they skip parameter gradients.
        stats: optional dict that receives ``forward_iterations`` and ``forward_residual`` now, and
            ``backward_iterations`` and ``backward_residual`` when the backward pass runs.

    Returns:
        ``f(z*)`` computed with autograd (equal to ``z*`` up to the solver tolerance), whose gradient
        hook performs the implicit backward solve.
    """
    check_solver(solver)
    check_solver(backward_solver, backward=True)
    with torch.no_grad():
        result = SOLVERS[solver](f, z0.detach(), tol=tol, max_iter=max_iter)
    if stats is not None:
        stats["forward_iterations"] = float(result.iterations)
        stats["forward_residual"] = float(result.residual)
    z = f(result.z)  # one differentiable step: gradients w.r.t. the parameters flow through here
    if not z.requires_grad or backward_solver == "none":
        return z

    z_leaf = result.z.detach().requires_grad_()
    f_leaf = (f_detached or f)(z_leaf)  # graph of f around z*, for the vector-Jacobian products J^T y

    def backward_hook(grad: torch.Tensor) -> torch.Tensor:
        def vjp_step(y: torch.Tensor) -> torch.Tensor:
            return autograd.grad(f_leaf, z_leaf, y, retain_graph=True)[0] + grad

        back = SOLVERS[backward_solver](vjp_step, grad, tol=backward_tol, max_iter=backward_max_iter)
        if stats is not None:
            stats["backward_iterations"] = float(back.iterations)
            stats["backward_residual"] = float(back.residual)
        return back.z

    z.register_hook(backward_hook)
    return z
