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

Solvers work on tensors with a leading batch dimension, and every batch element is its own fixed-point
problem: it converges by its own relative residual ``||f(z) - z|| / ||f(z)||`` and, once that is below
``tol``, it is frozen (its iterate no longer changes); Anderson mixes each element's own history and
keeps each element's own best iterate. The loop ends when every element has converged or at
``max_iter``. So an element's answer is a function of its own problem only, not of which other problems
share its batch (DESIGN section 9), provided ``f`` itself acts on each element separately (the grid VI
step does). A closure over the whole batch cannot be restricted, so frozen elements are still passed
through a plain ``f``, and nothing computed for them is used; an ``f`` with a ``restrict(index,
batch_size)`` method (the grid VI step) is instead evaluated on the unconverged elements only, once they
are at most ``RESTRICT_FRACTION`` of the rows it last ran on: on a batch of 15x15 training mazes the
slowest element needs about three times the mean number of iterations. Graph planners whose nodes from
several graphs form one system can pass ``z[None]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import autograd

from diffplan.errors import BadInputError

Fn = Callable[[torch.Tensor], torch.Tensor]
_EPS = 1e-8
RESTRICT_FRACTION = 0.75  # re-restrict f when the unconverged elements are at most this share of its rows


class _ActiveRows:
    """``f`` of a solver's iterate, computed for the unconverged elements only where ``f`` allows it.

    ``rows(z, done)`` returns ``f(z)`` for every element not ``done``; a done element's row is ``z``'s own
    (the solvers discard it). With ``f.restrict(index, batch_size)`` (a map of the elements ``index``
    alone, each computed exactly as in the whole batch) the restricted map is rebuilt whenever the unconverged
    elements fall to ``RESTRICT_FRACTION`` of the rows it covers, so a shrinking batch costs less.
    """

    def __init__(self, f: Fn):
        self.f, self.index, self.sub = f, None, f
        self.restrictable = callable(getattr(f, "restrict", None))

    def __call__(self, z: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        if not self.restrictable:
            return self.f(z)
        covered = z.shape[0] if self.index is None else self.index.numel()
        active = (~done).nonzero().squeeze(1)
        if 0 < active.numel() <= RESTRICT_FRACTION * covered:
            self.index, self.sub = active, self.f.restrict(active, z.shape[0])
        if self.index is None:
            return self.f(z)
        out = z.clone()
        out[self.index] = self.sub(z[self.index])
        return out


@dataclass
class SolverResult:
    """What a solver found, per batch element and summed up over the batch.

    Attributes:
        z: the fixed point; each element's own answer (for Anderson, its own best iterate).
        iterations: applications of ``f`` the solve took: the most any element needed.
        residual: the largest element residual ``||f(z) - z|| / (||f(z)|| + eps)`` of the answers.
        element_iterations: (B,) int64, applications of ``f`` until each element converged (``max_iter``
            for one that did not).
        element_residual: (B,) the residual of each element's answer.
        converged: (B,) bool, which elements reached ``tol``.
    """

    z: torch.Tensor
    iterations: int
    residual: float
    element_iterations: torch.Tensor
    element_residual: torch.Tensor
    converged: torch.Tensor


def _residuals(fz: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(B,) relative residual of each element: ``||f(z) - z|| / (||f(z)|| + eps)``."""
    diff = (fz - z).flatten(1).norm(dim=1)
    return diff / (fz.flatten(1).norm(dim=1) + _EPS)


def _per_element(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) mask viewed so that it broadcasts over ``like`` (B, ...)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _gram(g: torch.Tensor) -> torch.Tensor:
    """(B, n, N) -> (B, n, n): ``g @ g^T`` of each element, bit for bit the same whatever the batch.

    ``torch.bmm`` rounds one element's product differently with the batch size and thread count for
    some shapes (measured at N = 225, a 15 x 15 map of DE-VIN), and Anderson's mixing weights amplify
    such rounding into differences of the size of the solver's residual (2e-2 relative on DE-VIN_maze15
    at its 50 iterations). Row by row, each entry is one plain reduction over the contiguous last
    dimension, which rounds the same for any batch and thread count.
    """
    return torch.stack([(g[:, i : i + 1] * g).sum(-1) for i in range(g.shape[1])], dim=1)


def _combine(alpha: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """(B, n), (B, n, N) -> (B, N): ``sum_i alpha_i hist_i`` per element, as a plain reduction too."""
    return (alpha[:, :, None] * hist).sum(1)


def _result(z: torch.Tensor, iters: torch.Tensor, res: torch.Tensor, done: torch.Tensor) -> SolverResult:
    empty = iters.numel() == 0
    return SolverResult(
        z=z,
        iterations=0 if empty else int(iters.max()),
        residual=0.0 if empty else float(res.max()),
        element_iterations=iters,
        element_residual=res,
        converged=done,
    )


def forward_iteration(f: Fn, z0: torch.Tensor, *, tol: float = 1e-4, max_iter: int = 50) -> SolverResult:
    """Plain fixed-point iteration ``z <- f(z)``, per element until its residual is below ``tol``.

    An element whose residual falls below ``tol`` keeps that iterate (``f`` of the previous one) from then
    on; the loop ends when all have converged or after ``max_iter`` applications of ``f``.
    """
    bsz, device = z0.shape[0], z0.device
    z = z0
    done = torch.zeros(bsz, dtype=torch.bool, device=device)
    iters = torch.full((bsz,), max_iter, dtype=torch.long, device=device)
    res = torch.full((bsz,), float("inf"), dtype=z0.dtype, device=device)
    rows = _ActiveRows(f)
    for it in range(1, max_iter + 1):
        if bool(done.all()):
            break
        fz = rows(z, done)
        step_res = _residuals(fz, z)
        active = ~done
        z = torch.where(_per_element(active, fz), fz, z)
        res = torch.where(active, step_res, res)
        newly = active & (step_res < tol)
        iters = torch.where(newly, it, iters)
        done = done | newly
    return _result(z, iters, res, done)


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
    """Anderson acceleration (type II) of the iteration ``z <- f(z)``, each batch element on its own.

    Each step mixes an element's last ``m`` iterates with the weights ``alpha`` that minimise the norm of
    its combined residual ``sum_i alpha_i (f(z_i) - z_i)`` subject to ``sum_i alpha_i = 1``. ``lam`` is a
    Tikhonov term relative to the element's mean squared residual (default: 100 machine epsilons of the
    dtype, enough to keep the small least-squares system well posed without slowing convergence); ``beta``
    damps (1 = undamped). Every element keeps the iterate with the smallest residual it has seen, and is
    frozen once that residual is below ``tol``: its history is no longer updated, its least-squares system
    is replaced by a well-posed dummy and whatever ``f`` computes for it is discarded.
    """
    if lam is None:
        lam = 100 * torch.finfo(z0.dtype).eps
    bsz = z0.shape[0]
    shape, dtype, device = z0.shape, z0.dtype, z0.device
    x_hist = torch.zeros(bsz, m, z0[0].numel(), dtype=dtype, device=device)
    f_hist = torch.zeros_like(x_hist)
    x_hist[:, 0] = z0.reshape(bsz, -1)
    f_hist[:, 0] = f(z0).reshape(bsz, -1)
    best_z = f_hist[:, 0].clone()
    best_res = _residuals(f_hist[:, 0], x_hist[:, 0])
    done = best_res < tol
    iters = torch.where(done, 1, max(max_iter, 1)).to(torch.long)

    def record(it: int, k: int) -> None:
        """Keep each active element's best iterate (slot ``k`` of the history); freeze the converged."""
        nonlocal best_z, best_res, done, iters
        res = _residuals(f_hist[:, k], x_hist[:, k])
        active = ~done
        better = active & ((res < best_res) | best_res.isnan())
        best_z = torch.where(better[:, None], f_hist[:, k], best_z)
        best_res = torch.where(better, res, best_res)
        newly = active & (best_res < tol)
        iters = torch.where(newly, it, iters)
        done = done | newly

    rows = _ActiveRows(f)

    def advance(k: int, x_new: torch.Tensor) -> None:
        """Slot ``k`` of the active elements' history becomes ``x_new`` and ``f(x_new)``."""
        keep = done[:, None]
        x_hist[:, k] = torch.where(keep, x_hist[:, k], x_new)
        f_new = rows(x_hist[:, k].reshape(shape), done).reshape(bsz, -1)
        f_hist[:, k] = torch.where(keep, f_hist[:, k], f_new)

    if max_iter <= 1 or bool(done.all()):
        return _result(best_z.reshape(shape), iters, best_res, done)
    advance(1, f_hist[:, 0].clone())
    record(2, 1)
    h_mat = torch.zeros(bsz, m + 1, m + 1, dtype=dtype, device=device)
    h_mat[:, 0, 1:] = h_mat[:, 1:, 0] = 1
    rhs = torch.zeros(bsz, m + 1, 1, dtype=dtype, device=device)
    rhs[:, 0] = 1
    eye = torch.eye(m, dtype=dtype, device=device)
    for it in range(3, max_iter + 1):
        if bool(done.all()):
            break
        n = min(it - 1, m)
        g = f_hist[:, :n] - x_hist[:, :n]
        gram = _gram(g)
        # Scale the regulariser with the element's residuals so it neither vanishes nor dominates near
        # convergence; a frozen element's history may be degenerate, so it solves a dummy system instead.
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(_EPS)[:, None, None]
        system = gram + lam * scale * eye[:n, :n]
        h_mat[:, 1 : n + 1, 1 : n + 1] = torch.where(done[:, None, None], eye[:n, :n], system)
        alpha = torch.linalg.solve(h_mat[:, : n + 1, : n + 1], rhs[:, : n + 1])[:, 1 : n + 1, 0]
        k = (it - 1) % m
        mixed_f = _combine(alpha, f_hist[:, :n])
        if beta != 1.0:
            mixed_f = beta * mixed_f + (1 - beta) * _combine(alpha, x_hist[:, :n])
        advance(k, mixed_f)
        record(it, k)
    return _result(best_z.reshape(shape), iters, best_res, done)


SOLVERS: dict[str, Callable[..., SolverResult]] = {"forward": forward_iteration, "anderson": anderson}
BACKWARD_MODES: tuple[str, ...] = (*SOLVERS, "none")


def check_solver(name: str, *, backward: bool = False) -> str:
    """``name`` if it is a known solver ("forward", "anderson"; backward also "none"), else BadInputError."""
    valid = BACKWARD_MODES if backward else tuple(SOLVERS)
    if name not in valid:
        role = "backward solver" if backward else "solver"
        raise BadInputError(f"unknown DEQ {role} {name!r}; use one of {', '.join(valid)}.")
    return name


def _record(stats: dict[str, float], role: str, result: SolverResult) -> None:
    empty = result.converged.numel() == 0
    stats[f"{role}_iterations"] = float(result.iterations)
    stats[f"{role}_iterations_mean"] = 0.0 if empty else float(result.element_iterations.double().mean())
    stats[f"{role}_residual"] = float(result.residual)
    stats[f"{role}_converged"] = 1.0 if empty else float(result.converged.double().mean())


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
        solver, tol, max_iter: forward solver ("forward" or "anderson") and its stopping rule, which
            applies to each batch element separately.
        backward_solver: solver of the backward equation ``g = J^T g + grad`` ("forward", "anderson"), or
            "none" for the Jacobian-free one-step gradient (``g = grad``; cheaper, approximate).
        backward_tol, backward_max_iter: stopping rule of the backward solve (per element too).
        f_detached: optional, the same map with its parameters detached from the graph; used for the
            vector-Jacobian products of the backward solve so that they skip parameter gradients.
        stats: optional dict that receives ``forward_iterations`` (the most any batch element needed),
            ``forward_iterations_mean``, ``forward_residual`` (the largest element residual) and
            ``forward_converged`` (the fraction of elements that reached ``tol``) now, and the same
            ``backward_*`` figures when the backward pass runs.

    Returns:
        ``f(z*)`` computed with autograd (equal to ``z*`` up to the solver tolerance), whose gradient
        hook performs the implicit backward solve.
    """
    check_solver(solver)
    check_solver(backward_solver, backward=True)
    with torch.no_grad():
        result = SOLVERS[solver](f, z0.detach(), tol=tol, max_iter=max_iter)
    if stats is not None:
        _record(stats, "forward", result)
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
            _record(stats, "backward", back)
        return back.z

    z.register_hook(backward_hook)
    return z
