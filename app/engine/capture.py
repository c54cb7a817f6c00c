"""Record chosen layers' outputs during one forward pass."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import torch
from torch import nn


def module_names(model: nn.Module) -> list[str]:
    """Every addressable module name (dotted path), in definition order; the root is left out."""
    return [name for name, _ in model.named_modules() if name]


def capture(
    model: nn.Module, layers: Iterable[str], batch: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``batch`` and return its output and each named layer's output (batch dimension kept).

    Hooks are registered for this call only and removed before returning. Each hook records only the forward
    pass of the thread that registered it, so concurrent captures on one shared module never mix their results.
    Names must exist in the model (``KeyError`` otherwise).
    """
    modules = dict(model.named_modules())
    owner = threading.get_ident()
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if threading.get_ident() == owner and isinstance(output, torch.Tensor):
                # A copy: the next module may work in place (AlexNet's ReLU(inplace=True) after each conv)
                # and would otherwise turn this conv's recorded output into the ReLU's.
                captured[name] = output.clone()

        return hook

    try:
        for name in layers:
            handles.append(modules[name].register_forward_hook(recorder(name)))
        with torch.inference_mode():
            output = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return output, captured


def output_shapes(model: nn.Module, input_size: int, layers: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape without the batch dimension, from one pass on a dummy input.

    Run it on a ``meta``-device skeleton (see ``ModelRegistry.skeleton``) to get shapes with no memory or time cost.
    """
    device = next(model.parameters()).device
    names = module_names(model) if layers is None else list(layers)
    _, captured = capture(model, names, torch.zeros(1, 3, input_size, input_size, device=device))
    return {name: tuple(captured[name].shape[1:]) for name in names if name in captured}
