"""DE-SymVIN: an equivariant VIN whose values are the fixed point of its VI step (implicit gradients)."""

from __future__ import annotations

from diffplan.models._registry import constructor_config, register_model
from diffplan.models.grid._base import EquilibriumSolve, check_gamma
from diffplan.models.grid.symvin import SymVINLayers


@register_model("DE-SymVIN", symmetric=True, implicit=True)
class DESymVIN(EquilibriumSolve, SymVINLayers):
    """Deep-equilibrium SymVIN: ``v* = VI_step(v*)`` with the equivariant step of SymVIN, no K.

    As for DE-VIN, the value kernel is always normalised to l1 norm <= ``gamma`` < 1 (a contraction, so
    the fixed point exists; the published DE-SymVIN starts with values ~1e17). The solvers only combine
    the iterates linearly with coefficients computed from norms and inner products, which rotations and
    reflections preserve, so the fixed point keeps SymVIN's equivariance (up to the solver tolerance).
    A DE-SymVIN's state dict loads into ``SymVIN(k=K, value_norm=True, gamma=gamma, complete_basis=...)``.

    ``complete_basis`` is on by default: under the contraction bound escnn's band-limited value kernels
    pass on at most 55% of a neighbour's value per step (see :class:`SymVINLayers`), so far goals would
    fade out of the fixed point. Parameters at release size: 5860 (4900 without the complete basis).

    Args:
        l_h, l_q, f, group, no_equiv_policy, complete_basis, wall_mask: as for SymVIN.
        gamma, solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter, value_kernel:
            as for DE-VIN.
        state_reward, value_field: as for SymVIN (release v1.1).

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
        group: str = "d4",
        no_equiv_policy: bool = False,
        complete_basis: bool = True,
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
        value_field: str = "regular",
    ) -> None:
        config = constructor_config(locals())
        super().__init__(
            l_h=l_h,
            l_q=l_q,
            f=f,
            group=group,
            no_equiv_policy=no_equiv_policy,
            complete_basis=complete_basis,
            value_norm=True,
            gamma=check_gamma(gamma, strict=True),
            wall_mask=wall_mask,
            value_kernel=value_kernel,
            state_reward=state_reward,
            value_field=value_field,
        )
        self._init_solver(solver, tol, max_iter, backward_solver, backward_tol, backward_max_iter)
        self.config = config
