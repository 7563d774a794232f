"""Symmetry groups for equivariant planners: groups by name, action fields, steerable filters.

Groups are the finite subgroups of O(2) that act on a pixel grid, chosen by name:

    "c4"  rotations by 90 degrees                      (escnn ``rot2dOnR2(N=4)``, 4 elements)
    "d4"  rotations by 90 degrees and reflections      (escnn ``flipRot2dOnR2(N=4)``, 8 elements)
    "c8"  rotations by 45 degrees                      (escnn ``rot2dOnR2(N=8)``, 8 elements)
    "d8"  rotations by 45 degrees and reflections      (escnn ``flipRot2dOnR2(N=8)``, 16 elements)

escnn's conventions, checked against torch (tests/models/test_grid_planners.py re-checks them through the
planners): the rotation by 90 degrees acts on an image like ``torch.rot90(x, 1, dims=(-2, -1))`` and the
reflection ``(-, 0)`` like ``torch.flip(x, dims=(-1,))``. On the action field below, that rotation moves
channel ``a`` to ``a + 1`` and the reflection swaps channels 1 and 3: exactly what DESIGN section 3 asks
of the actions N, W, S, E, so channel ``a`` *is* action ``a`` and no permutation is needed.

Rotations by 45 degrees (c8/d8) do not map the pixel grid to itself, so those groups are equivariant only
up to interpolation error for odd multiples of 45 degrees; their 90-degree rotations and reflections are
exact.
"""

from __future__ import annotations

import copy
import math
from functools import cache

import torch
from escnn import gspaces
from escnn import nn as enn
from torch import nn

from diffplan._threads import torch_threads
from diffplan.errors import BadInputError

GROUPS: tuple[str, ...] = ("c4", "d4", "c8", "d8")


@cache
def get_gspace(group: str) -> gspaces.GSpace2D:
    """The escnn group space acting on the plane for a group name ("c4", "d4", "c8", "d8")."""
    name = group.lower()
    if name not in GROUPS:
        raise BadInputError(f"unknown symmetry group {group!r}; use one of {', '.join(GROUPS)}.")
    order = int(name[1:])
    return gspaces.flipRot2dOnR2(N=order) if name[0] == "d" else gspaces.rot2dOnR2(N=order)


def group_size(gspace: gspaces.GSpace2D) -> int:
    """Number of group elements = number of channels of one regular field."""
    return gspace.fibergroup.order()


def action_field(gspace: gspaces.GSpace2D) -> tuple[enn.FieldType, list[int]]:
    """The field type of the equivariant policy head and which of its channels are N, W, S, E.

    The head's channels are the directions the group moves a "north" arrow to: the quotient of the group
    by the reflection that fixes north (dihedral groups) or the regular representation (cyclic groups),
    one channel per direction, counter-clockwise from north. For 90-degree groups these are the four
    actions; for 45-degree groups (8 directions) the actions are every second channel (0, 2, 4, 6), and
    the diagonal channels are dropped, which keeps the four logits equivariant under the 90-degree
    rotations and reflections.
    """
    rep = gspace.quotient_repr(subgroup_id=(0, 1)) if gspace.flips_order > 0 else gspace.regular_repr
    step = rep.size // 4
    return enn.FieldType(gspace, [rep]), list(range(0, rep.size, step))


class SteerableFilter(nn.Module):
    """The weights of one equivariant convolution, expanded to a plain filter on demand.

    Holds only the trainable basis coefficients (``weights``, and ``bias`` when asked), so the state dict
    has the same keys in training and evaluation mode: escnn's ``R2Conv`` caches its expanded filter as a
    buffer in eval mode only, which breaks strict loading across modes; here the basis samples are
    non-persistent buffers rebuilt by the constructor. Call the module once per forward pass and reuse the
    filter with ``F.conv2d`` (e.g. across value-iteration steps) instead of re-expanding per step.

    Args:
        in_type, out_type: escnn field types of the input and output.
        kernel_size: odd filter size.
        bias: learn an (equivariant) bias.
        init: "he" (escnn's generalised He initialisation) or "zeros".

    Shapes:
        forward() -> filter (out_type.size, in_type.size, k, k), bias (out_type.size,) or None.
    """

    def __init__(
        self,
        in_type: enn.FieldType,
        out_type: enn.FieldType,
        kernel_size: int,
        *,
        bias: bool = False,
        init: str = "he",
    ) -> None:
        super().__init__()
        conv = enn.R2Conv(in_type, out_type, kernel_size, padding=kernel_size // 2, bias=bias)
        self.kernel_size = kernel_size
        self.in_size, self.out_size = in_type.size, out_type.size
        # escnn shares basis-expansion modules between convolutions of the same types: a private copy keeps
        # one planner's .double() or .to(device) from converting another planner's basis.
        self.basis = copy.deepcopy(conv.basisexpansion)
        for module in self.basis.modules():  # basis samples: constants rebuilt by the constructor
            for name, buf in list(module._buffers.items()):
                if buf is not None:
                    module.register_buffer(name, buf, persistent=False)
        weights = conv.weights.detach().clone()
        self.weights = nn.Parameter(torch.zeros_like(weights) if init == "zeros" else weights)
        if bias:
            self.bias = nn.Parameter(conv.bias.detach().clone())
            self.register_buffer("bias_expansion", conv.bias_expansion.detach().clone(), persistent=False)
        else:
            self.bias = None

    def forward(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = self.kernel_size
        weight = self.basis(self.weights).reshape(self.out_size, self.in_size, k, k)
        bias = self.bias_expansion @ self.bias if self.bias is not None else None
        return weight, bias

    @torch.no_grad()
    def set_filter(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> float:
        """Set the coefficients to those of an expanded filter (and bias), found on *this* host's basis.

        escnn computes its steerable bases numerically (null spaces of its Clebsch-Gordan constraints), and
        the solution within a degenerate subspace depends on the CPU's BLAS kernels: the same coefficients
        give other filters on an AMD EPYC than on an AVX-512 Intel host (SymVIN_maze15 planned at 2.5%
        accuracy). The space of equivariant filters is the same everywhere, so a filter saved expanded is
        portable: its coefficients here are the least-squares solution of ``expand(c) = weight``, found by
        conjugate gradients on the normal equations (the expansion is linear; its adjoint is its gradient).

        Shapes: weight (out_size, in_size, k, k); bias (out_size,). Returns the relative reconstruction
        error (0 up to float rounding when the filter is equivariant for this group).
        """
        basis = copy.deepcopy(self.basis).double()
        target = weight.detach().double().reshape(-1)
        shape = self.weights.shape

        def expand(c: torch.Tensor) -> torch.Tensor:
            return basis(c).reshape(-1)

        def adjoint(r: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                c = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
                (grad,) = torch.autograd.grad(expand(c), c, grad_outputs=r)
            return grad

        # CG on E^T E c = E^T w (E has full column rank: escnn's basis elements are independent).
        c = torch.zeros(shape, dtype=torch.float64)
        rhs = adjoint(target)
        residual = rhs.clone()
        direction = residual.clone()
        norm = float((residual * residual).sum())
        scale = max(float((rhs * rhs).sum()), 1e-300)
        for _ in range(4 * c.numel()):
            if norm <= 1e-28 * scale:
                break
            applied = adjoint(expand(direction))
            alpha = norm / float((direction * applied).sum())
            c += alpha * direction
            residual -= alpha * applied
            new_norm = float((residual * residual).sum())
            direction = residual + (new_norm / norm) * direction
            norm = new_norm
        self.weights.copy_(c.to(self.weights.dtype))
        error = float((expand(c) - target).norm() / target.norm().clamp_min(1e-300))
        if bias is not None and self.bias is not None:
            expansion = self.bias_expansion.double()
            solution = torch.linalg.lstsq(expansion, bias.detach().double().reshape(-1, 1)).solution[:, 0]
            self.bias.copy_(solution.to(self.bias.dtype))
            bias_error = (expansion @ solution - bias.double()).norm() / bias.double().norm().clamp_min(
                1e-300
            )
            error = max(error, float(bias_error))
        return error


def _sampled_regular_filters(group: str, kernel_size: int) -> tuple[torch.Tensor, int, int]:
    """Filters (G * G * k * k, n) that span every equivariant k x k filter between regular fields, with
    redundant columns; and G and the dimension d = G * k * k of their span.

    escnn samples its steerable basis from band-limited angular harmonics on a few rings; on a 3x3 grid
    that spans 48 of the 72 dimensions of the exactly equivariant filters, and misses the single-pixel
    shifts. Sampling on every ring of the grid up to angular frequency 4 (a ring of a square grid has at
    most 8 pixels) spans them all. Only for groups that map the pixel grid to itself (c4, d4).
    """
    gspace = get_gspace(group)
    if gspace.rotations_order != 4:
        raise BadInputError(
            f"a complete filter basis needs a group of 90-degree rotations (c4, d4), not {group!r}."
        )
    regular = enn.FieldType(gspace, [gspace.regular_repr])
    half = kernel_size // 2
    rings = sorted({math.hypot(y, x) for y in range(half + 1) for x in range(half + 1)})
    conv = enn.R2Conv(
        regular, regular, kernel_size, padding=half, bias=False, rings=rings,
        frequencies_cutoff=lambda r: 4, initialize=False,
    )  # fmt: skip
    columns = []
    with torch.no_grad():
        for i in range(conv.weights.numel()):
            conv.weights.zero_()
            conv.weights[i] = 1.0
            columns.append(conv.expand_parameters()[0].double().flatten())
    size = group_size(gspace)
    return torch.stack(columns, dim=1), size, size * kernel_size * kernel_size


@cache
def _complete_regular_basis(group: str, kernel_size: int) -> torch.Tensor:
    """The canonical orthonormal basis (d, G, G, k, k) of every equivariant k x k filter between regular
    fields: one element per orbit of filter entries, 1 / sqrt(G) on the orbit and 0 elsewhere.

    The group acts on a filter's entries (output channel, input channel, pixel) by permutations, freely on
    the output channel, so every orbit holds exactly one entry of output channel 0: the d = G * k * k
    entries of that channel index the basis, in their flat order. An element is found without knowing
    escnn's conventions: the orthogonal projector onto the equivariant filters is the average over the
    group's permutations, so its column for entry j is 1 / G on j's orbit; that is computed from any
    orthonormal basis of the sampled span and snapped to exact values.

    Any other orthonormal basis (an SVD's, say) would be defined only up to a rotation within degenerate
    singular subspaces, which LAPACK chooses differently with the thread count or the CPU: coefficients
    trained against one would give other filters against another (checkpoint format 1 did this; see
    ``legacy_complete_regular_basis``).
    """
    sampled, size, rank = _sampled_regular_filters(group, kernel_size)
    u, sv, _ = torch.linalg.svd(sampled, full_matrices=False)
    if int((sv > sv[0] * 1e-4).sum()) != rank:  # pragma: no cover - escnn changed its basis
        raise RuntimeError(f"escnn's sampled basis does not span the {rank} equivariant filters of {group}.")
    span = u[:, :rank]
    orbit_sums = (span @ span[:rank].T).T * size  # row j: G * (projector column j) = orbit indicator of j
    indicator = orbit_sums.round()
    orbits_of_size_g = torch.equal(indicator.sum(1), torch.full((rank,), float(size), dtype=indicator.dtype))
    if (indicator - orbit_sums).abs().max() > 1e-6 or not orbits_of_size_g:  # pragma: no cover
        raise RuntimeError(f"the equivariant filters of {group} are not spanned by orbit indicators.")
    basis = indicator / math.sqrt(size)
    return basis.reshape(rank, size, size, kernel_size, kernel_size).float().contiguous()


def clear_basis_cache() -> None:
    """Forget the computed complete bases, so the next model built computes them afresh (release QA
    builds a model again on other settings to check that it comes out the same)."""
    _complete_regular_basis.cache_clear()


def legacy_complete_regular_basis(group: str, kernel_size: int) -> torch.Tensor:
    """The basis checkpoint format 1 stored its coefficients against: the first d left singular vectors
    of the sampled filters, computed on one thread (as every release model was trained here).

    Used only to read format-1 checkpoints (``release.checkpoint``); see ``_complete_regular_basis`` for
    why it was replaced.
    """
    sampled, size, rank = _sampled_regular_filters(group, kernel_size)
    with torch_threads(1):
        u, _, _ = torch.linalg.svd(sampled, full_matrices=False)
    return u[:, :rank].T.reshape(rank, size, size, kernel_size, kernel_size).float().contiguous()


class CompleteRegularFilter(nn.Module):
    """An equivariant k x k filter between regular fields on a complete basis (see above).

    Like :class:`SteerableFilter` (same ``forward()`` contract) but with ``d`` coefficients per pair of
    fields, d = G * k * k (72 for D4 and a 3x3 kernel), enough for any equivariant filter: in particular
    one that moves a value exactly one cell, which a VI step with a normalised kernel needs.

    With ``trivial_input`` the input fields are trivial (one channel each) and d = k * k: element j is
    the orbit of pixel j of output channel 0, i.e. output channel g is the base filter moved by group
    element g. It is the complete basis of filters from a scalar map to regular fields (escnn's
    band-limited one cannot shift a value exactly either), found as the regular basis summed over its
    input channels: a trivial field is a regular field whose channels are all equal.

    Args:
        group: group name. in_fields, out_fields: numbers of input and output fields. kernel_size: odd.
        init: "zeros", "he" (Gaussian, variance 2 / fan-in per filter entry) or "shift": output field i
            is the orbit of one entry of value 1 (basis element ``i mod d`` of input field 0), a filter
            that copies one input channel from one neighbour (or the centre) to each output channel; the
            start of a convex value kernel (``value_kernel="convex"``), as ``shift_logits`` is for VIN.
        trivial_input: the input fields are trivial, not regular.

    Shapes:
        forward() -> filter (out_fields * G, in_fields * C, k, k), None; C = G, or 1 with
        ``trivial_input``.
    """

    def __init__(
        self,
        group: str,
        in_fields: int,
        out_fields: int,
        kernel_size: int,
        *,
        init: str = "zeros",
        trivial_input: bool = False,
    ):
        super().__init__()
        self.group, self.kernel_size = group.lower(), kernel_size
        self.trivial_input = bool(trivial_input)
        basis = _complete_regular_basis(self.group, kernel_size)
        if self.trivial_input:  # elements (c=0, pixel j) summed over input channels: (k * k, G, 1, k, k)
            basis = basis[: kernel_size * kernel_size].sum(dim=2, keepdim=True)
        self.register_buffer("basis", basis.clone(), persistent=False)
        self.in_fields, self.out_fields = in_fields, out_fields
        weights = torch.zeros(out_fields, in_fields, basis.shape[0])
        if init == "he":  # orthonormal basis: entry variance = coefficient variance * d / (G * C * k * k)
            _, size, channels, _, _ = basis.shape
            fan_in = in_fields * channels * kernel_size**2
            entry_var = 2.0 / fan_in
            weights.normal_(0.0, math.sqrt(entry_var * size * channels * kernel_size**2 / basis.shape[0]))
        elif init == "shift":  # basis elements are 1 / sqrt(G) on their orbit: coefficient sqrt(G) -> 1
            fields = torch.arange(out_fields)
            weights[fields, 0, fields % basis.shape[0]] = math.sqrt(basis.shape[1])
        elif init != "zeros":
            raise BadInputError(f"init must be zeros, he or shift, got {init!r}.")
        self.weights = nn.Parameter(weights)

    def forward(self) -> tuple[torch.Tensor, None]:
        _, g, c, k, _ = self.basis.shape
        weight = torch.einsum("oid,dgckl->ogickl", self.weights, self.basis)
        return weight.reshape(self.out_fields * g, self.in_fields * c, k, k), None
