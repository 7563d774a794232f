"""The value-iteration (VI) step of the grid planners, with a sparse backward pass.

One step maps a value map ``v`` to

    q = q_r + conv_f(v, W_v)                   (l_q fields of G channels)
    v' = max over the l_q fields of q           (per group channel)

For an equivariant planner (G = 8 for D4) the convolution is the expensive part: every output channel of
every field must be computed to take the max (l_q * G outputs from G * f * f inputs per cell). Plain
autograd then stores q at every step and runs two more dense products backward. But the max passes the
gradient of each (cell, channel) to exactly one field, so :class:`_MaxOverFields` stores only ``v`` and
the index of the winning field, and backward gathers the winning filters (about l_q times fewer
operations for the input gradient) and runs one dense product for the kernel gradient. Values are kept
pixel-major, (B, H, W, G), so the convolution is one matrix product of cell neighbourhoods (B*H*W, f*f*G)
with the kernel matrix (f*f*G, l_q*G).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalise_value_kernel(weight: torch.Tensor, gamma: float, group_size: int) -> torch.Tensor:
    """Scale each output field of ``weight`` (out, in, f, f) to l1 norm <= gamma.

    The norm is shared by the ``group_size`` channels of a field (their filters are transformed copies of
    each other), so the scaling keeps an equivariant filter equivariant.
    """
    norms = weight.abs().sum(dim=(1, 2, 3)).view(-1, group_size).amax(dim=1)
    scale = gamma / norms.clamp_min(gamma)
    return weight * scale.repeat_interleave(group_size)[:, None, None, None]


def kernel_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv filter (out, in, f, f) -> matrix (f * f * in, out) acting on :func:`neighbourhoods` rows."""
    out_ch, in_ch, f, _ = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(f * f * in_ch, out_ch)


def neighbourhoods(v: torch.Tensor, f: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H * W, f * f * C): each cell's f x f neighbourhood, zero outside the map."""
    b, h, w, c = v.shape
    p = f // 2
    padded = F.pad(v, (0, 0, p, p, p, p))
    windows = [padded[:, dy : dy + h, dx : dx + w] for dy in range(f) for dx in range(f)]
    return torch.stack(windows, dim=3).reshape(b * h * w, f * f * c)


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


class _MaxOverFields(torch.autograd.Function):
    """``v'[n, g] = max_i (q_r + neighbourhoods(v) @ w)[n, i * G + g]`` with a sparse backward."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, q_r: torch.Tensor, w: torch.Tensor, f: int) -> torch.Tensor:
        b, h, wd, g = v.shape
        q = torch.addmm(q_r, neighbourhoods(v, f), w)
        out, winner = q.view(b * h * wd, -1, g).max(dim=1)
        ctx.save_for_backward(v, w, winner)
        ctx.f = f
        return out.view(b, h, wd, g)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        v, w, winner = ctx.saved_tensors
        b, h, wd, g = v.shape
        grad = grad_out.reshape(b * h * wd, g)
        cols = winner * g + torch.arange(g, device=v.device)  # (N, G): column of q that won
        grad_v = grad_q_r = grad_w = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_q = grad.new_zeros(grad.shape[0], w.shape[1]).scatter_(1, cols, grad)
            grad_q_r = grad_q if ctx.needs_input_grad[1] else None
            if ctx.needs_input_grad[2]:
                grad_w = neighbourhoods(v, ctx.f).t() @ grad_q
        if ctx.needs_input_grad[0]:
            chosen = w.t()[cols]  # (N, G, f*f*G): the filter of the winning field, per channel
            grad_nb = torch.bmm(grad[:, None, :], chosen)[:, 0]
            grad_v = _fold_neighbourhoods(grad_nb, v.shape, ctx.f)
        return grad_v, grad_q_r, grad_w, None


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
        self.q_r, self.w_v, self.free = q_r, w_v, free
        self.f = w_v.shape[-1]
        self.w = kernel_matrix(w_v)

    def q(self, v: torch.Tensor) -> torch.Tensor:
        """All action values of ``v``, differentiable by plain autograd (used once, for the policy)."""
        return torch.addmm(self.q_r, neighbourhoods(v, self.f), self.w)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = _MaxOverFields.apply(v, self.q_r, self.w, self.f)
        if self.free is not None:
            worst = v.masked_fill(~self.free, float("inf")).amin(dim=(1, 2), keepdim=True)
            worst = torch.where(torch.isfinite(worst), worst, torch.zeros_like(worst))  # no free cell
            v = torch.where(self.free, v, worst)
        return v

    def detached(self) -> VIStep:
        """The same step with its parameters cut from the graph: cheaper vector-Jacobian products in v."""
        step = VIStep.__new__(VIStep)
        step.q_r, step.w_v, step.free, step.f = self.q_r.detach(), self.w_v.detach(), self.free, self.f
        step.w = self.w.detach()
        return step
