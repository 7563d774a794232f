"""VIN: the Value Iteration Network (Tamar et al., 2016) on 2-D mazes."""

from __future__ import annotations

import torch
from torch import nn

from diffplan.envs.actions import NUM_ACTIONS
from diffplan.models._checks import check_int, check_k_range, draw_k
from diffplan.models._registry import constructor_config, register_model
from diffplan.models.grid._base import GridPlanner, VIStep, unrolled
from diffplan.models.grid._vi_step import shift_logits


class VINLayers(GridPlanner):
    """The parameters of a VIN, shared by :class:`VIN` and DE-VIN (same state-dict keys as published).

    ``h`` 3x3 conv [maze, goal] -> l_h (with bias), ``r`` 1x1 conv -> 1 reward channel, ``q`` f x f conv of
    the reward -> l_q, ``w`` the f x f value kernel -> l_q (starts at zero, as published: at
    initialisation no value propagates, whatever K), ``policy`` 1x1 conv l_q -> 4 actions.
    Parameters: 2 * 9 * l_h + l_h + l_h + 2 * l_q * f^2 + 4 * l_q = 3880 for l_h = 150, l_q = 40, f = 3.
    """

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
        encoder_kernel: int = 3,
    ):
        super().__init__(
            l_h=l_h,
            l_q=l_q,
            f=f,
            value_norm=value_norm,
            gamma=gamma,
            wall_mask=wall_mask,
            value_kernel=value_kernel,
            state_reward=state_reward,
        )
        e = check_int("encoder_kernel", encoder_kernel, odd=True)
        self.h = nn.Conv2d(2, l_h, kernel_size=e, padding=e // 2, bias=True)
        self.r = nn.Conv2d(l_h, 1, kernel_size=1, bias=False)
        # With state_reward every field takes the cell's reward: no reward kernel (and no state-dict key).
        self.q = None if state_reward else nn.Conv2d(1, l_q, kernel_size=f, padding=f // 2, bias=False)
        start = shift_logits(l_q, 1, f) if self.value_kernel == "convex" else torch.zeros(l_q, 1, f, f)
        self.w = nn.Parameter(start)
        self.policy = nn.Conv2d(l_q, NUM_ACTIONS, kernel_size=1, bias=False)

    def _filters(self) -> dict[str, torch.Tensor]:
        return {
            "h": self.h.weight,
            "h_bias": self.h.bias,
            "r": self.r.weight,
            "q_r": None if self.q is None else self.q.weight,
            "q_v": self.w,
        }

    def _policy(self, q: torch.Tensor, filters: dict[str, torch.Tensor]) -> torch.Tensor:
        return q @ self.policy.weight.flatten(1).t()


@register_model("VIN")
class VIN(VINLayers):
    """Value Iteration Network: K unrolled VI steps, trained by backpropagation through all of them.

    Args:
        k: number of VI steps (a cell farther than K steps from the goal gets no goal information;
            DESIGN section 3 lists the path lengths of the 15x15 data).
        l_h: encoder channels. l_q: action-value channels (VI "actions") per step.
        f: size of the q kernel (odd).
        value_norm: bound the value kernel's l1 norm by ``gamma`` (non-expansive VI step; see
            :mod:`diffplan.models.grid._base`). False = the published computation.
        gamma: the bound (discount) used when ``value_norm``; 1.0 = undiscounted.
        wall_mask: walls take the worst free-cell value after each step (no value flows through walls).
        value_kernel: "free" (the published kernel, bounded by ``value_norm``) or "convex": ``gamma``
            times a softmax over the kernel's taps (see :mod:`diffplan.models.grid._base`).
        state_reward: every field gets the cell's reward instead of its own f x f reward kernel (a
            reward of the state, not of the move; see :mod:`diffplan.models.grid._base`).
        encoder_kernel: size of the encoder's kernel (odd; 3 as published, 1 = a reward per cell type).
        k_train: None (every pass runs ``k`` steps) or ``[low, high]``: while ``self.training``, each
            forward pass draws its number of steps uniformly from low..high (torch's global generator,
            which the training run seeds), so the step is trained for budgets past ``k`` too; in eval
            mode ``k`` is used.

    Shapes:
        maze (B, H, W), goal (B, 1, H, W) -> logits (B, 4, H, W) over N, W, S, E, values (B, 1, H, W).
    """

    def __init__(
        self,
        *,
        k: int = 20,
        l_h: int = 150,
        l_q: int = 40,
        f: int = 3,
        value_norm: bool = False,
        gamma: float = 1.0,
        wall_mask: bool = False,
        value_kernel: str = "free",
        state_reward: bool = False,
        encoder_kernel: int = 3,
        k_train: list[int] | None = None,
    ) -> None:
        config = constructor_config(locals())
        super().__init__(
            l_h=l_h,
            l_q=l_q,
            f=f,
            value_norm=value_norm,
            gamma=gamma,
            wall_mask=wall_mask,
            value_kernel=value_kernel,
            state_reward=state_reward,
            encoder_kernel=encoder_kernel,
        )
        self.k = check_int("k", k)
        self.k_train = check_k_range(k_train)
        self.config = config

    def _solve(self, step: VIStep, v0: torch.Tensor, stats: dict[str, float]) -> torch.Tensor:
        if self.training and self.k_train is not None:
            k = draw_k(self.k_train)
            stats["k"] = float(k)  # only then: a v1.0 planner's stats stay as they were
            return unrolled(step, v0, k)
        return unrolled(step, v0, self.k)
