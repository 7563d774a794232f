"""SymVIN: the VIN made equivariant to the symmetries of the grid (Zhao et al., "Integrating Symmetry into
Differentiable Planning with Steerable Convolutions", ICLR 2023), with escnn steerable convolutions."""

from __future__ import annotations

import torch
from escnn import nn as enn
from torch import nn

from diffplan.envs.actions import NUM_ACTIONS
from diffplan.models._checks import check_choice, check_int, check_k_range, draw_k
from diffplan.models._registry import constructor_config, register_model
from diffplan.models._symmetry import (
    CompleteRegularFilter,
    SteerableFilter,
    action_field,
    get_gspace,
    group_size,
)
from diffplan.models.grid._base import GridPlanner, VIStep, unrolled

VALUE_FIELDS = ("regular", "trivial")  # the field type of the reward and value maps (see SymVINLayers)


class SymVINLayers(GridPlanner):
    """The parameters of a SymVIN, shared by :class:`SymVIN` and DE-SymVIN.

    Field types: [maze, goal] and ``h`` (l_h) are trivial fields, the reward ``r`` and the values ``v``
    one regular field (G channels, G = group order), ``q`` l_q regular fields; ``v`` is the max over the
    l_q fields taken per group channel, so it stays a regular field. The policy head maps q to the action
    field of :func:`diffplan.models._symmetry.action_field` (D4: the quotient by the reflection subgroup,
    C4: the regular representation), whose channels are N, W, S, E, or with ``no_equiv_policy`` a plain
    1x1 convolution of the (l_q * G)-channel tensor. The q filter of the published model ([r, v] -> q) is
    kept as its two blocks ``q_r`` and ``q_v`` (same basis, same parameter count); ``q_v`` starts at zero
    as VIN's value kernel does, which keeps the initial values bounded (the published He initialisation
    of the whole q filter gave an initial loss of ~13). Filters are expanded from their escnn bases once
    per forward pass, and the reward part of q is computed once, not at every step.
    Parameters at l_h = 150, l_q = 40, f = 3, d4: 750 + 150 + 2 * 1920 + 160 = 4900 (published), or
    750 + 150 + 1920 + 2880 + 160 = 5860 with ``complete_basis``.

    ``value_field="trivial"`` (release v1.1) makes the reward and the values one scalar (trivial) field,
    as in a VIN, and ``v`` the max over all l_q * G channels of q: each field's G channels are one value
    filter moved by each group element, so a field whose filter takes the northern neighbour's value
    covers all four moves. The regular value field costs G times as much per step (G input channels per
    tap) for a freedom a planner does not need: from a trivial encoder the reward is the same in every
    group channel, and once the fields cover the moves, so are the values. With the complete basis
    ``q_v`` then has f * f coefficients per field (:class:`CompleteRegularFilter` with
    ``trivial_input``).

    ``complete_basis`` expands ``q_v`` on a basis of *all* equivariant f x f filters between regular
    fields (72 coefficients per pair of fields for D4 and f = 3, :class:`CompleteRegularFilter`) instead
    of escnn's band-limited basis (48). The band-limited filters cannot move a value exactly one cell:
    under the l1 bound of ``value_norm`` (and of every DEQ) the best of them passes on at most 55% of a
    neighbour's value per step (31% of a diagonal one), so values fade geometrically with the distance
    to the goal and the planner stops seeing far goals. With the complete basis the bound costs nothing.
    """

    def __init__(
        self,
        *,
        l_h: int,
        l_q: int,
        f: int,
        group: str,
        no_equiv_policy: bool,
        complete_basis: bool,
        value_norm: bool,
        gamma: float,
        wall_mask: bool,
        value_kernel: str = "free",
        state_reward: bool = False,
        value_field: str = "regular",
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
        gspace = get_gspace(group)
        self.group = group.lower()
        self.group_size = group_size(gspace)
        self.no_equiv_policy = bool(no_equiv_policy)
        self.value_field = check_choice("value_field", value_field, VALUE_FIELDS)
        trivial, regular = gspace.trivial_repr, gspace.regular_repr
        in_type = enn.FieldType(gspace, 2 * [trivial])
        h_type = enn.FieldType(gspace, l_h * [trivial])
        v_type = enn.FieldType(gspace, [trivial if self.value_field == "trivial" else regular])
        self.value_channels = v_type.size
        q_type = enn.FieldType(gspace, l_q * [regular])
        self.h = SteerableFilter(in_type, h_type, 3, bias=True)
        self.r = SteerableFilter(h_type, v_type, 1)
        # With state_reward every field takes the cell's reward: no reward kernel (and no state-dict key).
        self.q_r = None if state_reward else SteerableFilter(v_type, q_type, f)
        if complete_basis:
            # A convex kernel starts as one-cell shifts (from zeros it is uniform and fades the goal).
            init = "shift" if self.value_kernel == "convex" else "zeros"
            trivial_input = self.value_field == "trivial"
            self.q_v = CompleteRegularFilter(self.group, 1, l_q, f, init=init, trivial_input=trivial_input)
        else:
            self.q_v = SteerableFilter(v_type, q_type, f, init="zeros")
        if self.no_equiv_policy:
            self.policy = nn.Conv2d(q_type.size, NUM_ACTIONS, kernel_size=1, bias=False)
            self._action_channels = None
        else:
            out_type, channels = action_field(gspace)
            self.policy = SteerableFilter(q_type, out_type, 1)
            self._action_channels = None if len(channels) == out_type.size else channels

    def _filters(self) -> dict[str, torch.Tensor]:
        h, h_bias = self.h()
        q_r = None if self.q_r is None else self.q_r()[0]
        return {"h": h, "h_bias": h_bias, "r": self.r()[0], "q_r": q_r, "q_v": self.q_v()[0]}

    def _policy(self, q: torch.Tensor, filters: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.no_equiv_policy:
            return q @ self.policy.weight.flatten(1).t()
        logits = q @ self.policy()[0].flatten(1).t()
        # 45-degree groups: eight directions, of which every second one is an action.
        return logits if self._action_channels is None else logits[:, self._action_channels]


@register_model("SymVIN", symmetric=True)
class SymVIN(SymVINLayers):
    """Symmetric VIN: K unrolled equivariant VI steps.

    Exactly equivariant (up to float error) to 90-degree rotations (and reflections for dihedral
    groups): rotating the maze and goal by ``torch.rot90(., 1, dims=(-2, -1))`` rotates the logits and
    moves action a to (a + 1) % 4; flipping left-right swaps W and E; flipping up-down swaps N and S.
    ``no_equiv_policy`` breaks this in the head only.

    Args:
        k: number of VI steps.
        l_h: encoder channels (trivial fields). l_q: regular fields of q.
        f: size of the q kernel (odd).
        group: "d4" (default), "c4", "d8" or "c8" (see :mod:`diffplan.models._symmetry`).
        no_equiv_policy: plain 1x1 conv policy head instead of the equivariant one.
        complete_basis: value kernel on the complete equivariant basis (c4/d4 only; see
            :class:`SymVINLayers`); use it with ``value_norm``.
        value_norm: bound the value kernel's l1 norm by ``gamma`` (see :mod:`diffplan.models.grid._base`):
            values then grow at most linearly with K, not geometrically as the published SymVIN's can.
        gamma: the bound (discount) used when ``value_norm``; 1.0 = undiscounted.
        wall_mask: walls take the worst free-cell value after each step.
        value_kernel: "free" or "convex" (``gamma`` times a softmax over the taps of each expanded
            output channel, which keeps the filter equivariant), as for VIN.
        state_reward: every field gets the cell's reward (its regular field) instead of its own f x f
            reward filter, as for VIN (release v1.1).
        k_train: None or ``[low, high]``: a random number of steps per forward pass while training,
            as for VIN.
        value_field: "regular" (published) or "trivial": the field type of the reward and values (see
            :class:`SymVINLayers`).

    The defaults are the published computation (4900 parameters), except that the value kernel starts at
    zero, so the initial loss is ~1.4 instead of ~13.

    Shapes:
        maze (B, H, W), goal (B, 1, H, W) -> logits (B, 4, H, W) over N, W, S, E, values (B, 1, H, W)
        (the max over the group channels of the regular value field, an invariant map, or the trivial
        value field itself).
    """

    def __init__(
        self,
        *,
        k: int = 20,
        l_h: int = 150,
        l_q: int = 40,
        f: int = 3,
        group: str = "d4",
        no_equiv_policy: bool = False,
        complete_basis: bool = False,
        value_norm: bool = False,
        gamma: float = 1.0,
        wall_mask: bool = False,
        value_kernel: str = "free",
        state_reward: bool = False,
        k_train: list[int] | None = None,
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
            value_norm=value_norm,
            gamma=gamma,
            wall_mask=wall_mask,
            value_kernel=value_kernel,
            state_reward=state_reward,
            value_field=value_field,
        )
        self.k = check_int("k", k)
        self.k_train = check_k_range(k_train)
        self.config = config

    def _solve(self, step: VIStep, v0: torch.Tensor, stats: dict[str, float]) -> torch.Tensor:
        if self.training and self.k_train is not None:
            k = draw_k(self.k_train)
            stats["k"] = float(k)
            return unrolled(step, v0, k)
        return unrolled(step, v0, self.k)
