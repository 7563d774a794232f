"""DE-VIN: a VIN whose values are the fixed point of its VI step, trained with implicit gradients."""

from __future__ import annotations

from diffplan.models._registry import constructor_config, register_model
from diffplan.models.grid._base import EquilibriumSolve, check_gamma
from diffplan.models.grid.vin import VINLayers


@register_model("DE-VIN", implicit=True)
class DEVIN(EquilibriumSolve, VINLayers):
    """Deep-equilibrium VIN: ``v* = VI_step(v*)``, no K; the same parameters (and state-dict keys) as VIN.

    The value kernel is always normalised to l1 norm <= ``gamma`` < 1, which makes the VI step a
    ``gamma``-contraction in the sup norm: the fixed point exists, is unique, and both the forward and
    the backward (implicit-gradient) iterations converge (the published DE-VIN has no such bound and its
    values can diverge). A DE-VIN's state dict loads into ``VIN(k=K, value_norm=True, gamma=gamma)``,
    which approximates it for large K.

    Args:
        l_h, l_q, f, wall_mask: as for VIN.
        gamma: contraction factor (discount) of the VI step, in (0, 1).
        solver: forward solver, "anderson" or "forward" (plain iteration).
        tol, max_iter: forward stopping rule (relative residual, iterations).
        backward_solver: "anderson", "forward", or "none" (Jacobian-free one-step gradient).
        backward_tol, backward_max_iter: backward stopping rule.
        value_kernel: "free" (l1 bound ``gamma``) or "convex" (``gamma`` times a softmax over the taps;
            still a ``gamma``-contraction), as for VIN.
        state_reward, encoder_kernel: as for VIN (release v1.1).

    Shapes:
        maze (B, H, W), goal (B, 1, H, W) -> logits (B, 4, H, W) over N, W, S, E, values (B, 1, H, W).
        stats: forward_iterations, forward_residual (and backward_* once backward has run), value_abs_max.
    """

    def __init__(
        self,
        *,
        l_h: int = 150,
        l_q: int = 40,
        f: int = 3,
        gamma: float = 0.9,
        wall_mask: bool = False,
        solver: str = "anderson",
        tol: float = 1e-4,
        max_iter: int = 50,
        backward_solver: str = "anderson",
        backward_tol: float = 1e-4,
        backward_max_iter: int = 50,
        value_kernel: str = "free",
        state_reward: bool = False,
        encoder_kernel: int = 3,
    ) -> None:
        config = constructor_config(locals())
        super().__init__(
            l_h=l_h,
            l_q=l_q,
            f=f,
            value_norm=True,
            gamma=check_gamma(gamma, strict=True),
            wall_mask=wall_mask,
            value_kernel=value_kernel,
            state_reward=state_reward,
            encoder_kernel=encoder_kernel,
        )
        self._init_solver(solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter)
        self.config = config
