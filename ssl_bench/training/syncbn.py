"""Batch normalisation over the global batch (all processes), as the SwAV/SimCLR recipes train.

On CUDA we use torch's ``SyncBatchNorm``. It refuses CPU tensors, so on CPU (gloo) we use our own
:class:`GlobalBatchNorm`: the same statistics from two differentiable all-reduces (sum, then the
centred sum of squares), so a run on N CPU processes computes what one process computes on the whole
batch; this is what lets the tests check 2 processes against 1 for every method.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_bench.ops.distributed import is_distributed


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm{1,2,3}d whose training-mode mean and variance are those of the global batch.

    Forward: mean = sum_r S_r / n, var = sum_r sum (x - mean)^2 / n over every process r (biased, as
    BatchNorm normalises); the running variance gets the unbiased n/(n-1) estimate, as BatchNorm's.
    Backward flows through the all-reduces (their gradient is the all-reduced gradient), which gives each
    process the gradient of the sum of every process's loss, as torch's SyncBatchNorm does.
    Outside training, or on one process, it is plain BatchNorm.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()  # statistics in float32 under autocast, as BatchNorm does
        count = torch.tensor([xf.numel() / xf.shape[1]], device=x.device)
        total = dist_fn.all_reduce(torch.cat([xf.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        return y.to(x.dtype)


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by a GlobalBatchNorm with the same parameters, statistics and ``requires_grad``."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        if module.affine:  # a frozen layer stays frozen (a momentum teacher's), as torch's convert_sync_batchnorm keeps
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA (fused kernels), GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_global_batchnorm(module)

