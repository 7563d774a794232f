"""Sym-MP-VIN: MP-VIN made E(2)-equivariant with escnn (SymPlan's graph planner).

Same computation as MP-VIN (``mp_vin.py``) on fibers of a finite group G without spatial base:
relative positions are the standard representation, goal/obstacle flags trivial, the encoder output,
reward r, value v and Q are regular fields, and v = max over the Q fields, per group channel. Rotating
or reflecting node positions by an element of G (about any point) therefore permutes the regular
channels and leaves the scores of the read-out unchanged, so the discrete logits permute as DESIGN
section 3 says (N -> W -> S -> E under a 90-degree counter-clockwise turn) and the continuous move
vector rotates with the map. Translations change nothing (only relative positions are used).

Two choices make it train reliably (measured on 400-step and 12-epoch runs of 2,000-3,000 mazes):
escnn weights start at torch.nn.Linear's scale instead of He's (``_escnn.INIT_SCALE``), and the Q layer
has the neighbour-mean skip (``_graph_vi.SplitMessagePassing``), which starts value iteration as a
diffusion from the goal. Without them v oscillated from step to step at initialisation and training
stalled near 75-80% accuracy. The discrete read-out adds SymVIN's equivariant per-node action head
(``_escnn.EqEdgeReadout``) to the invariant neighbour scores.

With ``group="c8"``/``"d8"`` the network is equivariant to 45-degree turns too, but the four lattice
moves are not, so the discrete output is equivariant only under the 90-degree subgroup.

``no_equiv_policy=True`` keeps the equivariant planner and replaces the read-out by the plain MLP of
MP-VIN over the raw channels (the published option for continuous actions).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffplan.models._checks import check_choice, check_k_range, steps_this_pass
from diffplan.models._output import PlanOutput
from diffplan.models._registry import constructor_config, register_model
from diffplan.models.graph._convex_vi import ConvexValueStep, regular_frames
from diffplan.models.graph._escnn import EqEdgeReadout, EqMessagePassing, EqMLP, no_base_gspace, standard_repr
from diffplan.models.graph._geometry import check_graph_inputs, check_hyper_params, edge_geometry
from diffplan.models.graph._graph_vi import value_iteration
from diffplan.models.graph._readout import EdgeReadout
from diffplan.task import Task


@register_model("Sym-MP-VIN", symmetric=True)
class SymMPVIN(nn.Module):
    """Equivariant message-passing VIN on graphs with node positions.

    Widths count regular fields (|G| channels each: 4 for c4, 8 for d4 and c8, 16 for d8).

    Args:
        k: value-iteration steps.
        l_h: encoder output fields.
        l_q: Q fields per node (v is their max, per group channel).
        mp_h: hidden fields of the encoder and reward MLPs.
        mp_q: hidden fields of the Q layer's message and update MLPs.
        readout_hidden: hidden fields of the neighbour-scoring MLP (times |G| channels when
            ``no_equiv_policy``).
        group: "c4", "d4", "c8" or "d8".
        cont_action: output a (dy, dx) move vector instead of logits over N, W, S, E.
        no_equiv_policy: plain (non-equivariant) read-out.
        k_train: None or ``[low, high]``: while training, each forward pass draws its number of VI
            steps uniformly from low..high (release v1.1), as the grid planners do; ``k`` in eval mode.
        value_step: "mlp" (the equivariant message-passing Q layer) or "convex" (release v1.1: the
            equivariant form of MP-VIN's convex step, ``_convex_vi.py``: each group channel g backs up
            ``q = r_g + gamma * sum_j w_jg v_jg`` with sender weights that sum to one, read in g's frame
            from the geometry and the encoder's invariants (max and mean of each field over its
            channels) by an MLP of ``mp_q * |G|`` hidden units shared by all channels). The read-out
            then sees ``[q - v, r]``.
        gamma: the discount of the convex step, in (0, 1); unused by "mlp".

    Shapes:
        x: (V, 4) [row, col, is_goal, is_obstacle]; edge_index: (2, E) int64; batch: (V,) or None
        (unused). -> PlanOutput(logits (V, 4) or (V, 2), values (V, 1): max of v over the group
        channels, stats {"vi_residual"}).
    """

    task = Task.GRAPH

    def __init__(
        self,
        k: int = 30,
        l_h: int = 4,
        l_q: int = 4,
        mp_h: int = 4,
        mp_q: int = 4,
        readout_hidden: int = 4,
        group: str = "d4",
        cont_action: bool = False,
        no_equiv_policy: bool = False,
        k_train: list[int] | None = None,
        value_step: str = "mlp",
        gamma: float = 0.99,
    ) -> None:
        config = constructor_config(locals())
        super().__init__()
        check_hyper_params(
            "Sym-MP-VIN", k=k, l_h=l_h, l_q=l_q, mp_h=mp_h, mp_q=mp_q, readout_hidden=readout_hidden
        )
        gs = no_base_gspace(group)
        self.config = {**config, "group": group.lower()}
        self.k_train = check_k_range(k_train)
        self.k, self.l_q, self.group_size = k, l_q, gs.fibergroup.order()
        std, flag, reg = standard_repr(gs), gs.trivial_repr, gs.regular_repr
        self.h = EqMessagePassing(gs, [std], static=[flag, flag], dynamic=[], hidden=mp_h, out=[reg] * l_h)
        self.r = EqMLP(gs.type(*[reg] * l_h, flag, flag), mp_h, gs.type(reg))
        self.value_step = check_choice("value_step", value_step, ("mlp", "convex"))
        if self.value_step == "convex":
            self.q = ConvexValueStep(
                2 * l_h + 2, mp_q * self.group_size, l_q, gamma, frames=regular_frames(gs)
            )
        else:
            self.q = EqMessagePassing(
                gs, [std], static=[reg], dynamic=[reg], hidden=mp_q, out=[reg] * l_q, neighbour_skip=True
            )
        # [q, v, r]; with the convex step [q - v, r]
        policy_fields = [reg] * l_q + ([reg] if self.value_step == "convex" else [reg, reg])
        if no_equiv_policy:
            size = gs.type(*policy_fields).size
            self.pi = EdgeReadout(size, readout_hidden * self.group_size, cont_action=cont_action)
        else:
            self.pi = EqEdgeReadout(gs, policy_fields, readout_hidden, cont_action=cont_action)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> PlanOutput:
        check_graph_inputs("Sym-MP-VIN", x, edge_index)
        geo = edge_geometry(x[:, :2], edge_index)
        flags = x[:, 2:]
        h = torch.relu(self.h(geo, flags))  # ReLU acts pointwise on regular fields: equivariant
        r = self.r(torch.cat([h, flags], dim=-1))
        n, g = x.shape[0], self.group_size
        steps = steps_this_pass(self.k, self.k_train, self.training)
        if self.value_step == "convex":
            fields = h.view(n, -1, g)  # invariants of each regular field: max and mean over its channels
            invariant = torch.cat([fields.amax(-1), fields.mean(-1), flags], dim=-1)
            ctx = self.q.prepare(geo, invariant, x[:, :2])
            q, v, residual = value_iteration(
                lambda v: self.q.step(ctx, r, v), lambda q: q.amax(-1), r.new_zeros(n, g), steps
            )
            advantage = (q - v[:, :, None]).transpose(1, 2).reshape(n, -1)  # (V, l_q * G), field-major
            values = v.amax(-1, keepdim=True)
            logits = self.pi(geo, torch.cat([advantage, r], dim=-1), values)
            return PlanOutput(logits=logits, values=values, stats={"vi_residual": residual})
        ctx = self.q.prepare(geo, r)

        def max_over_fields(q: Tensor) -> Tensor:  # per group channel, so v stays a regular field
            return q.view(n, self.l_q, g).amax(1)

        q, v, residual = value_iteration(
            lambda v: self.q.step(ctx, v), max_over_fields, r.new_zeros(n, g), steps
        )
        values = v.amax(-1, keepdim=True)  # invariant
        logits = self.pi(geo, torch.cat([q, v, r], dim=-1), values)
        return PlanOutput(logits=logits, values=values, stats={"vi_residual": residual})
