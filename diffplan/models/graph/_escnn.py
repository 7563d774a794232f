"""escnn building blocks for Sym-MP-VIN: groups without a spatial base, equivariant dense weights.

Node features of a graph planner are fibers of ``escnn.gspaces.no_base_space(G)``: the relative position
``pos_j - pos_i`` is the standard 2-d representation, goal/obstacle flags are trivial, hidden and Q fields
are regular. Every equivariant linear map is an ``EqLinear`` whose dense matrix is expanded from its basis
once per forward pass and then used with plain torch ops, so K value-iteration steps do not re-expand it.

Coordinates: a relative position (dy, dx) in (row, col) cell units is fed to escnn as the vector
(u1, u2) = (dy, dx) unchanged. escnn's rotation by +90 degrees then acts as (dy, dx) -> (-dx, dy), which is
what ``torch.rot90(maze, 1, dims=(-2, -1))`` does to displacements (a counter-clockwise turn of the
displayed map), and escnn's reflection ``(-, 0)`` acts as (dy, dx) -> (dy, -dx), a left-right flip. So no
permutation is needed; tests/models/test_graph_planners.py checks the resulting action permutations
against DESIGN section 3.
"""

from __future__ import annotations

import torch
from escnn import group as egroup
from escnn import gspaces
from escnn import nn as enn
from escnn.group import Representation
from torch import Tensor, nn
from torch.nn import functional as F

from diffplan.errors import BadInputError
from diffplan.models.graph._graph_vi import LayerWeights, SplitMessagePassing
from diffplan.models.graph._readout import EdgeReadout

GROUPS: tuple[str, ...] = ("c4", "d4", "c8", "d8")

# escnn's generalised He initialisation (variance 2 / fan-in) scaled to torch.nn.Linear's default
# (variance 1 / (3 fan-in)): at He scale the K-step recurrence starts chaotic (v oscillating from step to
# step) and training stalls; at this scale it behaves like MP-VIN's plain layers.
INIT_SCALE = 6**-0.5


def no_base_gspace(group: str) -> gspaces.GSpace0D:
    """The escnn group space without base space for a group name ("c4", "d4", "c8", "d8")."""
    name = group.lower()
    if name not in GROUPS:
        raise BadInputError(f"unknown symmetry group {group!r}; use one of {', '.join(GROUPS)}.")
    order = int(name[1:])
    fiber = egroup.dihedral_group(order) if name[0] == "d" else egroup.cyclic_group(order)
    return gspaces.no_base_space(fiber)


def standard_repr(gspace: gspaces.GSpace0D) -> Representation:
    """The 2-d representation by which the group rotates/reflects (dy, dx) vectors."""
    fiber = gspace.fibergroup
    return fiber.irrep(1, 1) if isinstance(fiber, egroup.DihedralGroup) else fiber.irrep(1)


class EqLinear(enn.Linear):
    """escnn ``Linear`` used through its dense matrix, with the same state-dict keys in train and eval mode.

    escnn caches the expanded matrix as a buffer in eval mode only, so a state dict saved in one mode
    does not load strictly in the other. This subclass drops that cache: ``matrices()`` expands the
    weights on every call (callers call it once per forward pass). It also builds its own basis modules
    (``recompute=True``): escnn otherwise shares them between *all* models in the process, so that
    ``.double()`` or ``.to(device)`` on one model silently changed the buffers of every other.
    """

    def __init__(
        self,
        in_type: enn.FieldType,
        out_type: enn.FieldType,
        bias: bool = True,
        init_scale: float = INIT_SCALE,
    ) -> None:
        super().__init__(in_type, out_type, bias=bias, recompute=True)
        for name in ("matrix", "expanded_bias"):
            self._buffers.pop(name, None)
        with torch.no_grad():
            self.weights.mul_(init_scale)

    def train(self, mode: bool = True) -> EqLinear:
        return nn.Module.train(self, mode)

    def matrices(self) -> tuple[Tensor, Tensor | None]:
        """Dense (out, in) matrix and (out,) bias (or None)."""
        return self.expand_parameters()

    def forward(self, x: Tensor) -> Tensor:  # plain tensors in and out
        return F.linear(x, *self.matrices())


class EqMLP(nn.Module):
    """Two equivariant linear maps with a ReLU on ``hidden`` regular fields between them (node-level)."""

    def __init__(self, in_type: enn.FieldType, hidden: int, out_type: enn.FieldType) -> None:
        super().__init__()
        gs = in_type.gspace
        self.lin1 = EqLinear(in_type, gs.type(*[gs.regular_repr] * hidden))
        self.lin2 = EqLinear(self.lin1.out_type, out_type)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.lin1(x).relu())


class EqMessagePassing(SplitMessagePassing):
    """``SplitMessagePassing`` whose message, update and output maps are G-equivariant.

    Args:
        gspace: the group space (``no_base_gspace``).
        geo, static, dynamic: representations of the edge geometry, static and dynamic node features.
        hidden: number of regular fields in the message and update hidden layers.
        out: representations of the output fields.
        neighbour_skip: see ``SplitMessagePassing``; the dynamic representation must tile ``out``
            (e.g. a regular v and regular Q fields), which keeps the skip equivariant.
    """

    def __init__(
        self,
        gspace: gspaces.GSpace0D,
        geo: list[Representation],
        static: list[Representation],
        dynamic: list[Representation],
        hidden: int,
        out: list[Representation],
        neighbour_skip: bool = False,
    ) -> None:
        size = lambda reprs: sum(r.size for r in reprs)  # noqa: E731
        hidden_type = gspace.type(*[gspace.regular_repr] * hidden)
        super().__init__(size(geo), size(static), size(dynamic), hidden_type.size, size(out), neighbour_skip)
        node = static + dynamic
        self.msg = EqLinear(gspace.type(*(geo + node + node)), hidden_type)
        self.upd = EqLinear(gspace.type(*node, *hidden_type.representations), hidden_type)
        # With the skip, start near the diffusion prior (see SplitMessagePassing).
        out_scale = INIT_SCALE * (0.1 if neighbour_skip else 1.0)
        self.out = EqLinear(hidden_type, gspace.type(*out), init_scale=out_scale)

    def weights(self) -> LayerWeights:
        return LayerWeights(*self.msg.matrices(), *self.upd.matrices(), *self.out.matrices())


def action_repr(gspace: gspaces.GSpace0D) -> tuple[Representation, list[int]]:
    """The representation of per-node action logits and which of its channels are N, W, S, E.

    One channel per direction the group moves "north" to, counter-clockwise from north: the quotient by
    the reflection fixing north for dihedral groups, the regular representation for cyclic ones. The
    rotation by 90 degrees moves channel a to a + 1 (a + 2 for 8-element rotation groups, whose diagonal
    channels are dropped) and the reflection swaps W and E: DESIGN section 3's action permutations.
    """
    dihedral = isinstance(gspace.fibergroup, egroup.DihedralGroup)
    rep = gspace.quotient_repr((0, 1)) if dihedral else gspace.regular_repr
    return rep, list(range(0, rep.size, rep.size // 4))


class EqEdgeReadout(EdgeReadout):
    """``EdgeReadout`` whose neighbour scores are G-invariant: [rel (standard), p_i, p_j] -> trivial.

    Discrete read-outs add an equivariant per-node head p_i -> ``action_repr`` (SymVIN's policy layer):
    action d's logit is the node head's channel d plus the score of the neighbour in direction d.

    Args:
        gspace: the group space; node: representations of the policy features p; hidden: regular fields.
    """

    def __init__(
        self, gspace: gspaces.GSpace0D, node: list[Representation], hidden: int, cont_action: bool = False
    ) -> None:
        node_type = gspace.type(*node)
        super().__init__(node_type.size, hidden, cont_action, build=False)
        in_type = gspace.type(standard_repr(gspace), *node, *node)
        self.hid = EqLinear(in_type, gspace.type(*[gspace.regular_repr] * hidden))
        self.score = EqLinear(self.hid.out_type, gspace.type(gspace.trivial_repr))
        if not cont_action:
            rep, self.action_channels = action_repr(gspace)
            self.head = EqLinear(node_type, gspace.type(rep))

    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (*self.hid.matrices(), *self.score.matrices())

    def node_logits(self, p: Tensor) -> Tensor | None:
        return self.head(p)[:, self.action_channels]
