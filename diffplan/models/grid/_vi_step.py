"""The value-iteration (VI) step of the grid planners, with a sparse backward pass.

One step maps a value map ``v`` to

    q = q_r + conv_f(v, W_v)                   (l_q fields of G channels)
    v' = max over the l_q fields of q           (per group channel)

For an equivariant planner (G = 8 for D4) the value convolution dominates: to take the max, every output
channel of every field must be computed (l_q * G outputs from f * f * G inputs per cell and step), one
dense matrix product forward. Backward, though, the max passes the gradient of each (cell, channel) to
exactly one field, so plain autograd's two dense products and dense q-gradient per step do about l_q
times more work than needed. :class:`_MaxOverFields` instead gathers the winning filters
(``embedding_bag``) for the value gradient, forms the kernel gradient as a sparse product, and records
the reward-part gradient sparsely for :class:`_CollectRewardGrad`, which adds every step's share once.
Values are kept pixel-major, (B, H, W, G), so the convolution is one matrix product of the cells'
neighbourhoods (B * H * W, f * f * G) with the kernel matrix (f * f * G, l_q * G).

On the CPU that product is bound by memory, not arithmetic: its inner dimension is only f * f * G (72 for
D4), while q (B * H * W, l_q * G) is 72 MB at batch 250 of SymVIN and was written out and read back at
every step. The forward pass therefore works through ``ROWS_PER_CHUNK`` cells at a time, so q stays in
cache; results are bit-identical. Without autograd (inference, the deep-equilibrium forward solve) no
winners are kept and the columns are reordered group-channel-major once per forward pass, so the max
runs over contiguous memory (``amax``). Measured with ``benchmarks.bench_grid_models`` (training steps)
and ``benchmarks.bench_validate`` (scoring); see the README's benchmark section.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Cells per chunk of the forward pass: (1024, l_q * G) floats = 1.3 MB at l_q 40, D4, which stays in L2/L3.
ROWS_PER_CHUNK = 1024


def normalise_value_kernel(weight: torch.Tensor, gamma: float, group_size: int) -> torch.Tensor:
    """Scale each output field of ``weight`` (out, in, f, f) to l1 norm <= gamma.

    The norm is shared by the ``group_size`` channels of a field (their filters are transformed copies of
    each other), so the scaling keeps an equivariant filter equivariant.
    """
    norms = weight.abs().sum(dim=(1, 2, 3)).view(-1, group_size).amax(dim=1)
    scale = gamma / norms.clamp_min(gamma)
    return weight * scale.repeat_interleave(group_size)[:, None, None, None]


# The convex kernel's logits are the parameters times this: RMSprop moves a parameter by about lr a step,
# so unscaled logits took thousands of steps to peak a distribution (84.5% accuracy after 800 steps).
CONVEX_LOGIT_SCALE = 10.0


def convex_value_kernel(weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """``gamma`` times a softmax of ``weight`` (out, in, f, f) over the (in, f, f) taps of each output.

    Each VI field then moves a discount ``gamma`` times a probability distribution over the neighbour
    values, as a Bellman backup does: a constant value map passes on exactly ``gamma`` times itself, and a
    peaked distribution (a one-cell shift) passes a far goal's value on undiminished for ``gamma = 1``.
    A permutation of the taps and channels (a rotation or reflection of an equivariant filter) commutes
    with the softmax, so an equivariant filter stays equivariant.
    """
    out_ch = weight.shape[0]
    logits = CONVEX_LOGIT_SCALE * weight.reshape(out_ch, -1)
    return gamma * torch.softmax(logits, dim=1).view_as(weight)


def shift_logits(out_ch: int, in_ch: int, f: int) -> torch.Tensor:
    """Initial parameters of a convex value kernel (out, in, f, f): output channel i a one-cell shift.

    Channel i puts logit ``1 / CONVEX_LOGIT_SCALE``-scaled weight 1 on tap ``i mod f * f`` (of input
    channel ``i mod in``), so after :func:`convex_value_kernel` it moves the value of one neighbour on
    (99.96% of it for f = 3) and every tap is covered by some channel. From the uniform (zero) start the
    shifts took most of a run to form and the goal's signal faded by about 0.956 a step, not gamma.
    """
    weight = torch.zeros(out_ch, in_ch, f * f)
    channels = torch.arange(out_ch)
    weight[channels, channels % in_ch, channels % (f * f)] = 1.0
    return weight.view(out_ch, in_ch, f, f)


def kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv filter (out, in, f, f) -> matrix (f * f * in, out) acting on :func:`neighbourhoods` rows."""
    out_ch, in_ch, f, _ = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(f * f * in_ch, out_ch)


def neighbourhoods(v: torch.Tensor, f: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W, C) -> (B * H * W, f * f * C): each cell's f x f neighbourhood, zero outside the map.

    ``out`` optionally receives the result, (B, H, W, f * f, C).
    """
    b, h, w, c = v.shape
    p = f // 2
    padded = F.pad(v, (0, 0, p, p, p, p))
    windows = [padded[:, dy : dy + h, dx : dx + w] for dy in range(f) for dx in range(f)]
    return torch.stack(windows, dim=3, out=out).view(b * h * w, f * f * c)


def _fold_neighbourhoods(grad: torch.Tensor, shape: torch.Size, f: int) -> torch.Tensor:
    """Adjoint of :func:`neighbourhoods`: (B * H * W, f * f * C) -> (B, H, W, C)."""
    b, h, w, c = shape
    p = f // 2
    grad = grad.view(b, h, w, f, f, c)
    out = grad.new_zeros(b, h + 2 * p, w + 2 * p, c)
    for dy in range(f):
        for dx in range(f):
            out[:, dy : dy + h, dx : dx + w] += grad[:, :, :, dy, dx]
    return out[:, p : p + h, p : p + w]


def _buffer(workspace: dict, key: str, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A scratch tensor of ``shape`` kept in ``workspace`` and reused by every step of a forward pass.

    Allocating and freeing these temporaries at every step fragments the heap (glibc keeps the holes),
    which grew the resident memory by about their size a step.
    """
    buffer = workspace.get(key)
    if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype or buffer.device != like.device:
        buffer = workspace[key] = like.new_empty(shape)
    return buffer


def _q_chunks(q_r: torch.Tensor, nb: torch.Tensor, w: torch.Tensor, workspace: dict):
    """Yield (row slice, q rows) of ``q = q_r + nb @ w``, one chunk of cells at a time (see module doc).

    The rows are written into one reused buffer: each chunk is valid until the next is made. On GPUs the
    whole product is one chunk, as kernel launches, not memory traffic, are what costs there.
    """
    n, width = q_r.shape
    size = n if q_r.is_cuda else min(ROWS_PER_CHUNK, n)
    buffer = _buffer(workspace, "q", q_r, (size, width))
    for start in range(0, n, size):
        rows = slice(start, min(start + size, n))
        yield rows, torch.addmm(q_r[rows], nb[rows], w, out=buffer[: rows.stop - start])


def _max_over_fields_no_grad(
    v: torch.Tensor, q_r_minor: torch.Tensor, w_minor: torch.Tensor, f: int, workspace: dict
) -> torch.Tensor:
    """The forward of :class:`_MaxOverFields` without winners, on group-channel-major columns.

    ``q_r_minor`` and ``w_minor`` hold the columns of q in (g, i) order, so each cell's max over the l_q
    fields is a max over contiguous memory. Same values as the autograd path: each q entry is the same
    dot product, only the columns are reordered.
    """
    b, h, wd, g = v.shape
    nb = neighbourhoods(v, f, out=_buffer(workspace, "nb", v, (b, h, wd, f * f, g)))
    out = v.new_empty(b * h * wd, g)
    for rows, q in _q_chunks(q_r_minor, nb, w_minor, workspace):
        torch.amax(q.view(q.shape[0], g, -1), dim=2, out=out[rows])
    return out.view(b, h, wd, g)


def group_channel_major(columns: torch.Tensor, group_size: int) -> torch.Tensor:
    """Reorder the last dimension of ``columns`` (..., l_q * G) from (i, g) to (g, i) order, contiguous."""
    *lead, width = columns.shape
    return columns.view(*lead, width // group_size, group_size).transpose(-1, -2).reshape(*lead, width)


class _CollectRewardGrad(torch.autograd.Function):
    """Identity on ``q_r``; its backward adds the sparse gradients the VI steps recorded for ``q_r``.

    Every step passes gradient to one field per (cell, channel) of ``q_r``; materialising that as a dense
    (B * H * W, l_q * G) tensor per step, and summing K of them, would cost more than the rest of the
    step's backward. The steps record (flat index, value) pairs instead, added here once.
    """

    @staticmethod
    def forward(ctx, q_r: torch.Tensor, records: list) -> torch.Tensor:
        ctx.records = records
        ctx.set_materialize_grads(False)
        return q_r.view_as(q_r)

    @staticmethod
    def backward(ctx, grad: torch.Tensor | None):
        records = ctx.records
        if not records:
            return grad, None
        shape = records[0][2]
        out = torch.zeros(shape, dtype=records[0][1].dtype, device=records[0][1].device)
        if grad is not None:
            out += grad
        out.view(-1).index_add_(0, torch.cat([r[0] for r in records]), torch.cat([r[1] for r in records]))
        records.clear()
        return out, None


class _MaxOverFields(torch.autograd.Function):
    """``v'[n, g] = max_i (q_r + neighbourhoods(v) @ w)[n, i * G + g]`` with a sparse backward.

    ``workspace`` holds reusable forward buffers and, under key "records", the list into which the
    gradient of ``q_r`` is recorded sparsely for :class:`_CollectRewardGrad` (without that key, the
    gradient of ``q_r`` is returned densely).
    """

    @staticmethod
    def forward(
        ctx, v: torch.Tensor, q_r: torch.Tensor, w: torch.Tensor, f: int, workspace: dict
    ) -> torch.Tensor:
        b, h, wd, g = v.shape
        nb = neighbourhoods(v, f, out=_buffer(workspace, "nb", v, (b, h, wd, f * f, g)))
        out = v.new_empty(b * h * wd, g)
        winner = torch.empty(b * h * wd, g, dtype=torch.long, device=v.device)
        for rows, q in _q_chunks(q_r, nb, w, workspace):
            torch.max(q.view(q.shape[0], -1, g), dim=1, out=(out[rows], winner[rows]))
        ctx.save_for_backward(v, w, winner)
        ctx.f, ctx.records = f, workspace.get("records")
        return out.view(b, h, wd, g)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        v, w, winner = ctx.saved_tensors
        b, h, wd, g = v.shape
        n, width = b * h * wd, w.shape[1]
        grad = grad_out.reshape(n, g)
        cols = winner * g + torch.arange(g, device=v.device)  # (N, G): the column of q that won
        grad_v = grad_q_r = grad_w = None
        if ctx.needs_input_grad[1]:
            if ctx.records is not None:
                flat = cols + torch.arange(n, device=v.device)[:, None] * width
                ctx.records.append((flat.flatten(), grad.flatten(), (n, width)))
            else:
                grad_q_r = grad.new_zeros(n, width).scatter_(1, cols, grad)
        if ctx.needs_input_grad[2]:  # (sum over the winners of grad * neighbourhood), as a sparse product
            rows = torch.arange(n, device=v.device).repeat_interleave(g)
            picked = torch.sparse_coo_tensor(
                torch.stack([cols.flatten(), rows]), grad.flatten(), (width, n), check_invariants=False
            )
            grad_w = torch.sparse.mm(picked, neighbourhoods(v, ctx.f)).t()
        if ctx.needs_input_grad[0]:  # sum over channels of grad * the winning field's filter
            grad_nb = F.embedding_bag(cols, w.t().contiguous(), per_sample_weights=grad, mode="sum")
            grad_v = _fold_neighbourhoods(grad_nb, v.shape, ctx.f)
        return grad_v, grad_q_r, grad_w, None, None


class VIStep:
    """One VI step ``v -> max_fields(q_r + conv(v, W_v))`` on a fixed reward part, pixel-major.

    Args:
        q_r: the reward part of q, (B * H * W, l_q * G), rows in (b, y, x) order.
        w_v: the value kernel as a conv filter, (l_q * G, G, f, f).
        free: (B, H, W, 1) bool map of free cells when walls are masked, else None.

    Shapes:
        ``step(v)``: (B, H, W, G) -> (B, H, W, G). ``step.q(v)``: (B, H, W, G) -> (B * H * W, l_q * G).
    """

    def __init__(self, q_r: torch.Tensor, w_v: torch.Tensor, free: torch.Tensor | None):
        self.workspace: dict = {}
        if q_r.requires_grad:
            self.workspace["records"] = []
            q_r = _CollectRewardGrad.apply(q_r, self.workspace["records"])
        self.q_r, self.w_v, self.free = q_r, w_v, free
        self.f = w_v.shape[-1]
        self.w = kernel_matrix(w_v)

    def q(self, v: torch.Tensor) -> torch.Tensor:
        """All action values of ``v``, differentiable by plain autograd (used once, for the policy)."""
        return torch.addmm(self.q_r, neighbourhoods(v, self.f), self.w)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and any(t.requires_grad for t in (v, self.q_r, self.w)):
            v = _MaxOverFields.apply(v, self.q_r, self.w, self.f, self.workspace)
        else:
            v = _max_over_fields_no_grad(v, *self._group_channel_major(v.shape[-1]), self.f, self.workspace)
        if self.free is not None:
            worst = v.masked_fill(~self.free, float("inf")).amin(dim=(1, 2), keepdim=True)
            worst = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst))  # no free cell
            v = torch.where(self.free, v, worst)
        return v

    def _group_channel_major(self, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``q_r`` and ``w`` with their columns in (g, i) order, made once per step object."""
        if "minor" not in self.workspace:
            with torch.no_grad():
                self.workspace["minor"] = (
                    group_channel_major(self.q_r, group_size),
                    group_channel_major(self.w, group_size),
                )
        return self.workspace["minor"]

    def restrict(self, index: torch.Tensor, batch_size: int) -> VIStep:
        """The step on the elements ``index`` (int64, (B',)) of its batch of ``batch_size`` alone, without
        autograd: the solvers' forward iterations skip the elements that have converged
        (``deq._ActiveRows``). Each element's rows are computed exactly as in the whole batch."""
        rows = self.q_r.detach()
        step = VIStep.__new__(VIStep)
        step.q_r = rows.view(batch_size, -1, rows.shape[1])[index].reshape(-1, rows.shape[1])
        step.free = None if self.free is None else self.free[index]
        step.w_v, step.w, step.f, step.workspace = self.w_v.detach(), self.w.detach(), self.f, {}
        return step

    def detached(self) -> VIStep:
        """The same step with its parameters cut from the graph: cheaper vector-Jacobian products in v."""
        step = VIStep.__new__(VIStep)
        step.q_r, step.w_v, step.free, step.f = self.q_r.detach(), self.w_v.detach(), self.free, self.f
        step.w, step.workspace = self.w.detach(), {}
        return step
