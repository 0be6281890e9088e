"""Counting model evaluations: gradient evaluations are stable where wall time is not."""
from __future__ import annotations

from torch import Tensor, nn


class CountingModel(nn.Module):
    """Wraps a model and counts per-sample forward passes and per-sample backward passes through
    its output (a gradient evaluation = one sample's logits back-propagated to the input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forwards = 0
        self.gradients = 0
        # Mirror the wrapped model's mode: a fresh nn.Module is in training mode, and a peer
        # library that "restores" the wrapper's mode with .train() would otherwise switch the
        # shared model (dropout, batch-norm statistics) into training mode.
        self.train(model.training)

    float_success = None  # set by ops.quantize.finish: success of the float output, before quantization

    def report_finish(self, float_success: Tensor) -> None:
        self.float_success = float_success.detach().clone()

    def reset(self) -> None:
        self.forwards = 0
        self.gradients = 0

    def _count_backward(self, n: int):
        def hook(grad: Tensor) -> None:
            self.gradients += n
        return hook

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        self.forwards += x.shape[0]
        if out.requires_grad:
            out.register_hook(self._count_backward(x.shape[0]))
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)
