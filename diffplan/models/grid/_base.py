"""What the four grid planners share: the forward pass around a value-iteration (VI) step.

Every grid planner computes, on a maze with a goal (Tamar et al., "Value Iteration Networks", 2016):

    h   = conv3x3([maze, goal])                    encoder, l_h channels
    r   = conv1x1(h)                               reward map, one field
    q_k = conv_f(r, W_r) + conv_f(v_k, W_v)        l_q action-value fields
    v_{k+1} = max over the l_q fields of q_k       (per group channel for equivariant planners)
    logits  = conv1x1(q(v_final))                  four actions N, W, S, E

The reward part ``conv_f(r, W_r)`` is the same at every step, so it is computed once. The planners differ
in where the filters come from (plain parameters or expanded escnn steerable filters) and in how the
final values are found (K unrolled steps, or the fixed point with implicit gradients).

Two optional changes of the VI step, both still a VIN, address what limits a plain VIN (DESIGN section 3
and the grid planners' report):

* ``value_norm`` scales the value kernel ``W_v`` of each output field to an l1 norm of at most ``gamma``
  (``W_v * gamma / max(gamma, ||W_v||_1)``). A VI step is then ``gamma``-Lipschitz in the sup norm, as
  a true Bellman backup with discount ``gamma`` is: values can grow at most linearly with K for
  ``gamma = 1`` (no geometric blow-up) and stay bounded by ``max|conv(r, W_r)| / (1 - gamma)`` for
  ``gamma < 1``, which is also what makes the deep-equilibrium fixed point exist and be unique.
* ``wall_mask`` makes walls non-traversable by construction: after every step the value of each wall
  cell is replaced by the smallest value of the free cells of its map (per channel), so no value flows
  through a wall, however thin, and a move into a wall is never better than the worst free cell.
  Otherwise the network must learn wall rewards negative enough to outweigh the longest detour.
  The map is a non-expansive operation, so it keeps the contraction property above.
* ``value_kernel="convex"`` (release v1.1) replaces the bound by ``gamma`` times a softmax over each
  field's taps: the value part of every field is a discounted expectation of neighbour values, never
  negative weights. Measured on the v1.0 VIN (49x49 mazes): its bounded kernels mix signs, so the goal's
  signal above the no-goal value floor shrinks by about 0.88 per step (116 at 20 steps, 10 at 40, 0.5 at
  60), while the floor varies by about 0.9 from cell to cell with the local wall pattern: past about 55
  steps the policy follows the floor, not the goal. Float64 changes nothing.
* ``state_reward`` (release v1.1) gives every field its cell's reward ``r`` instead of the field's own
  f x f convolution of the reward map: ``q_i = r + conv(v, W_v_i)``, the Bellman backup of a reward that
  depends on the state, not on the move. With a reward per field a trained VIN made the moves that lead
  to the goal cost more than staying put (measured: about 5 per step against 0.46 for its cheapest
  field), so beyond about 50 steps the no-goal floor ``max_i q_r_i / (1 - gamma)`` outranks the goal.
  With one reward per cell the goal's path is above the floor by ``gamma^d (R_goal - r) / (1 - gamma)``
  at every distance ``d``. Filters then need no ``q_r``.
* ``encoder_kernel`` (default 3, as published) sets the encoder's receptive field; 1 makes the reward a
  function of the cell alone (free, wall, goal), so every free non-goal cell has the same reward and the
  value floor cannot vary with the local wall pattern.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffplan.errors import BadInputError
from diffplan.models._checks import check_choice, check_int
from diffplan.models._output import PlanOutput
from diffplan.models.deq import check_solver, fixed_point
from diffplan.models.grid._vi_step import (
    VIStep,
    convex_value_kernel,
    kernel_matrix,
    neighbourhoods,
    normalise_value_kernel,
)
from diffplan.task import Task

VALUE_KERNELS = ("free", "convex")  # "free": the published kernel (bounded by value_norm); see module doc


def check_gamma(gamma: float, *, strict: bool) -> float:
    """``gamma`` if it lies in (0, 1) (strict) or (0, 1], else BadInputError."""
    number = isinstance(gamma, (int, float)) and not isinstance(gamma, bool)
    if not number or not (0.0 < gamma < 1.0 if strict else 0.0 < gamma <= 1.0):
        interval = "(0, 1) for a contraction" if strict else "(0, 1]"
        raise BadInputError(f"gamma must lie in {interval}, got {gamma!r}.")
    return float(gamma)


class GridPlanner(nn.Module):
    """Base class of the grid planners: the forward pass; subclasses supply filters and a solver.

    Subclasses implement ``_filters()`` -> dict of conv filters ``h`` (l_h, 2, 3, 3), ``h_bias`` (l_h,),
    ``r`` (C, l_h, 1, 1), ``q_r`` and ``q_v`` (l_q * G, C, f, f), expanded once per forward pass, where C
    is ``value_channels``, the channels of the reward and value maps (G, or 1 for a scalar value map);
    ``_policy(q, filters)``: action values (B * H * W, l_q * G) -> logits (B * H * W, 4); and
    ``_solve(step, v0, stats)``: the final value map (B, H, W, C) from ``v0`` = 0. They set
    ``group_size`` (G), ``value_channels`` (C) and ``config`` (the constructor arguments).
    """

    task = Task.GRID
    group_size: int = 1
    value_channels: int = 1
    config: dict

    def __init__(
        self,
        *,
        l_h: int,
        l_q: int,
        f: int,
        value_norm: bool,
        gamma: float,
        wall_mask: bool,
        value_kernel: str = "free",
        state_reward: bool = False,
    ):
        super().__init__()
        self.value_kernel = check_choice("value_kernel", value_kernel, VALUE_KERNELS)
        self.state_reward = bool(state_reward)
        self.l_h = check_int("l_h", l_h)
        self.l_q = check_int("l_q", l_q)
        self.f = check_int("f", f, odd=True)
        self.value_norm = bool(value_norm)
        self.gamma = check_gamma(gamma, strict=False)
        self.wall_mask = bool(wall_mask)

    def _filters(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _policy(self, q: torch.Tensor, filters: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _solve(self, step: VIStep, v0: torch.Tensor, stats: dict[str, float]) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())

    def forward(self, maze: torch.Tensor, goal: torch.Tensor) -> PlanOutput:
        """Plan on a batch of mazes.

        Args:
            maze: (B, H, W) (or (B, 1, H, W)), 1 = free, 0 = wall.
            goal: (B, 1, H, W) (or (B, H, W)), one-hot goal.

        Returns:
            PlanOutput with logits (B, 4, H, W) over N, W, S, E, values (B, 1, H, W) and scalar stats.
        """
        maze, goal = self._check_inputs(maze, goal)
        b, _, height, width = maze.shape
        filters = self._filters()
        r = self._reward(torch.cat([maze, goal], dim=1), filters)  # pixel-major (B, H, W, C) from here on
        w_v = filters["q_v"]
        if self.value_kernel == "convex":
            w_v = convex_value_kernel(w_v, self.gamma)
        elif self.value_norm:
            w_v = normalise_value_kernel(w_v, self.gamma, self.group_size)
        # contiguous: with one value channel torch.where would give v the strides of a rotated maze
        free = (maze > 0.5).permute(0, 2, 3, 1).contiguous() if self.wall_mask else None
        if self.state_reward:  # every field gets its cell's reward: columns in (field, group channel) order
            columns_per_channel = self.l_q * self.group_size // self.value_channels
            q_r = r.reshape(b * height * width, self.value_channels).repeat(1, columns_per_channel)
        else:
            q_r = neighbourhoods(r, self.f) @ kernel_matrix(filters["q_r"])
        step = VIStep(q_r, w_v, free)
        stats: dict[str, float] = {}
        v = self._solve(step, maze.new_zeros(b, height, width, self.value_channels), stats)
        logits = self._policy(step.q(v), filters)  # (B * H * W, 4)
        logits = logits.view(b, height, width, -1).permute(0, 3, 1, 2)
        values = v.amax(dim=3)[:, None]  # pooling over the group channels: an invariant value map
        stats["value_abs_max"] = float(values.detach().abs().max())
        return PlanOutput(logits=logits, values=values, stats=stats)

    # Equilibrium planners amplify the last-bit differences of a convolution computed for another batch
    # size or thread count (oneDNN picks its algorithm by shape) into different fixed points; computing
    # the encoder in float64 and rounding makes its output the same whatever the batch (see deq.py).
    exact_encoder: bool = False

    def _reward(self, x: torch.Tensor, filters: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reward map from [maze, goal]. Shapes: x (B, 2, H, W) -> (B, H, W, C)."""
        if not self.exact_encoder:
            h = F.conv2d(x, filters["h"], filters["h_bias"], padding=filters["h"].shape[-1] // 2)
            return F.conv2d(h, filters["r"]).permute(0, 2, 3, 1)
        bias = None if filters["h_bias"] is None else filters["h_bias"].double()
        h = F.conv2d(x.double(), filters["h"].double(), bias, padding=filters["h"].shape[-1] // 2)
        return F.conv2d(h, filters["r"].double()).to(x.dtype).permute(0, 2, 3, 1)

    def _check_inputs(self, maze: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if maze.dim() == 3:
            maze = maze[:, None]
        if goal.dim() == 3:
            goal = goal[:, None]
        if maze.dim() != 4 or maze.shape[1] != 1 or goal.shape != maze.shape:
            raise BadInputError(
                f"expected maze (B, H, W) and goal (B, 1, H, W) of the same B, H, W; got maze "
                f"{tuple(maze.shape)} and goal {tuple(goal.shape)}."
            )
        dtype = next(self.parameters()).dtype
        return maze.to(dtype), goal.to(dtype)


def unrolled(step: VIStep, v0: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` VI steps from ``v0``, backpropagated through every step."""
    v = v0
    for _ in range(k):
        v = step(v)
    return v


class EquilibriumSolve:
    """Mixin for the deep-equilibrium planners: values are the fixed point of the VI step.

    ``v* = step(v*)`` is found without autograd by ``solver`` ("anderson" or "forward") to a relative
    residual ``tol`` in at most ``max_iter`` steps, then one differentiable step is taken and the gradient
    through ``v*`` comes from the implicit backward solve (``backward_solver``; "none" = Jacobian-free).
    See :mod:`diffplan.models.deq`.
    """

    exact_encoder = True

    def _init_solver(
        self,
        solver: str,
        tol: float,
        max_iter: int,
        backward_solver: str,
        backward_tol: float,
        backward_max_iter: int,
    ) -> None:
        for name, value in (("tol", tol), ("backward_tol", backward_tol)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BadInputError(f"{name} must be a number >= 0, got {value!r}.")
        self._deq = dict(
            solver=check_solver(solver),
            tol=float(tol),
            max_iter=check_int("max_iter", max_iter),
            backward_solver=check_solver(backward_solver, backward=True),
            backward_tol=float(backward_tol),
            backward_max_iter=check_int("backward_max_iter", backward_max_iter),
        )

    def set_forward_solve(self, *, tol: float, max_iter: int) -> None:
        """Solve the fixed point to ``tol`` in at most ``max_iter`` iterations from now on.

        Release QA uses it on a float64 copy: the symmetry of the fixed point should be measured, not the
        point where the solver stopped (at the trained ``tol`` of 1e-4 the outputs of a rotated maze can
        differ by about that much, whatever the planner's symmetry).
        """
        self._deq["tol"] = float(tol)
        self._deq["max_iter"] = check_int("max_iter", max_iter)

    def _solve(self, step: VIStep, v0: torch.Tensor, stats: dict[str, float]) -> torch.Tensor:
        return fixed_point(step, v0, f_detached=step.detached(), stats=stats, **self._deq)
