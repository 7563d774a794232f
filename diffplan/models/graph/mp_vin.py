"""MP-VIN: value iteration as message passing with relative-position message MLPs (DiffPlan's graph VIN).

    h   = MP_h(flags)                         encoder, flags = [is_goal, is_obstacle]
    r   = MLP_r([h, flags])                   reward, 1 channel
    q   = MP_q([r, v]),  v = max_c q_c        K shared value-iteration steps from v = 0
    out = read-out over neighbours (``_readout.py``)

Each MP layer is ``_graph_vi.SplitMessagePassing``: messages are an MLP over ``[pos_j - pos_i, f_i, f_j]``
summed at the target, and the update is an MLP over ``[f_i, sum]``. Unlike the published model, no layer
sees absolute positions, so the planner is translation invariant, and the per-step cost is kept small by
precomputing the geometry and reward parts of every message once per forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffplan.errors import BadInputError
from diffplan.models._checks import check_choice, check_k_range, steps_this_pass
from diffplan.models._output import PlanOutput
from diffplan.models._registry import constructor_config, register_model
from diffplan.models.graph._convex_vi import ConvexValueStep
from diffplan.models.graph._geometry import check_graph_inputs, check_hyper_params, edge_geometry
from diffplan.models.graph._graph_vi import RelMessagePassing, value_iteration
from diffplan.models.graph._readout import EdgeReadout
from diffplan.task import Task


@register_model("MP-VIN")
class MPVIN(nn.Module):
    """Message-passing VIN on graphs with node positions.

    Args:
        k: value-iteration steps (cells farther than k steps from the goal get no signal).
        l_h: encoder output width.
        l_q: Q channels per node (v is their max).
        mp_h: hidden width of the encoder and reward MLPs.
        mp_q: hidden width of the Q layer's message and update MLPs.
        readout_hidden: hidden width of the neighbour-scoring MLP.
        cont_action: output a (dy, dx) move vector instead of logits over N, W, S, E.
        neighbour_skip: add the learned neighbour-mean skip to the Q layer (``_graph_vi``), which
            starts value iteration as a diffusion from the goal and keeps training off the
            initial plateau whatever the seed. Off by default: MP-VIN_graph v1 was trained without it.
        k_train: None or ``[low, high]``: while training, each forward pass draws its number of VI
            steps uniformly from low..high (release v1.1), as the grid planners do; ``k`` in eval mode.
        value_step: "mlp" (the published Q layer, an MLP over [r, v] messages) or "convex" (release
            v1.1: ``q_c = r + gamma * sum_j w_jc v_j`` with sender weights that sum to one, computed once
            from the geometry and encoder output; ``_convex_vi.py``). With "convex" the read-out sees
            ``[q - v, r]`` rather than ``[q, v, r]``, so no input grows with the distance to the goal.
        gamma: the discount of the convex step, in (0, 1); unused by "mlp".

    Shapes:
        x: (V, 4) [row, col, is_goal, is_obstacle]; edge_index: (2, E) int64; batch: (V,) or None
        (unused: graphs of a batch only interact through edge_index).
        -> PlanOutput(logits (V, 4) or (V, 2), values (V, 1), stats {"vi_residual"}).
    """

    task = Task.GRAPH

    def __init__(
        self,
        k: int = 30,
        l_h: int = 16,
        l_q: int = 8,
        mp_h: int = 32,
        mp_q: int = 16,
        readout_hidden: int = 32,
        cont_action: bool = False,
        neighbour_skip: bool = False,
        k_train: list[int] | None = None,
        value_step: str = "mlp",
        gamma: float = 0.99,
    ) -> None:
        config = constructor_config(locals())
        super().__init__()
        check_hyper_params(
            "MP-VIN", k=k, l_h=l_h, l_q=l_q, mp_h=mp_h, mp_q=mp_q, readout_hidden=readout_hidden
        )
        self.config = config
        self.k_train = check_k_range(k_train)
        self.k = k
        self.value_step = check_choice("value_step", value_step, ("mlp", "convex"))
        if self.value_step == "convex" and neighbour_skip:
            raise BadInputError("MP-VIN: neighbour_skip belongs to the mlp value step; drop it with convex.")
        self.h = RelMessagePassing(geo_dim=2, static_dim=2, dynamic_dim=0, hidden=mp_h, out_dim=l_h)
        self.r = nn.Sequential(nn.Linear(l_h + 2, mp_h), nn.ReLU(), nn.Linear(mp_h, 1))
        if self.value_step == "convex":
            self.q = ConvexValueStep(node_dim=l_h + 2, hidden=mp_q, channels=l_q, gamma=gamma)
            policy_dim = l_q + 1
        else:
            self.q = RelMessagePassing(
                geo_dim=2,
                static_dim=1,
                dynamic_dim=1,
                hidden=mp_q,
                out_dim=l_q,
                neighbour_skip=neighbour_skip,
            )
            policy_dim = l_q + 2
        self.pi = EdgeReadout(node_dim=policy_dim, hidden=readout_hidden, cont_action=cont_action)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None) -> PlanOutput:
        check_graph_inputs("MP-VIN", x, edge_index)
        geo = edge_geometry(x[:, :2], edge_index)
        flags = x[:, 2:]
        h = torch.relu(self.h(geo, flags))
        node = torch.cat([h, flags], dim=-1)
        r = self.r(node)
        steps = steps_this_pass(self.k, self.k_train, self.training)
        if self.value_step == "convex":
            ctx = self.q.prepare(geo, node, x[:, :2])
            step = lambda v: self.q.step(ctx, r, v)  # noqa: E731
        else:
            ctx = self.q.prepare(geo, r)
            step = lambda v: self.q.step(ctx, v)  # noqa: E731
        q, v, residual = value_iteration(step, lambda q: q.amax(-1, keepdim=True), torch.zeros_like(r), steps)
        policy = torch.cat([q - v, r] if self.value_step == "convex" else [q, v, r], dim=-1)
        logits = self.pi(geo, policy, v)
        return PlanOutput(logits=logits, values=v, stats={"vi_residual": residual})
