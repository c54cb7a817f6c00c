"""Record chosen layers' outputs during one forward pass."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)
# A model's output and each recorded layer's output (batch dimension kept), as ``capture`` returns them.
Captured = tuple[torch.Tensor, dict[str, torch.Tensor]]


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


class TracedCapture:
    """``capture`` of ``layers`` for one (1, 3, ``input_size``, ``input_size``) batch, traced once into a TorchScript
    graph: the same outputs, bit for bit, without Python between the kernels.

    Eager, each module's call runs Python under the GIL: two workers' passes side by side then wait for each other,
    and one pass spends a fifth of its time there (``docs/performance.md``). The graph shares the model's weights.

    A trace follows the path of its example only, so it suits networks without control flow on their values (the
    cards' CNNs). It is checked against the eager pass on a random batch before use; a model whose trace fails or
    differs (``graph`` is then None), and a batch of another shape, are captured eagerly.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], input_size: int) -> None:
        self.model = model
        self.layers = list(layers)
        self._example = torch.zeros(1, 3, input_size, input_size)
        self.graph: torch.jit.ScriptModule | None
        try:
            self.graph = _trace(model, self.layers, self._example)
        except Exception:  # a model the tracer cannot follow still works, eagerly
            logger.warning("the forward pass could not be traced; capturing it eagerly", exc_info=True)
            self.graph = None
            return
        probe = torch.randn(self._example.shape, generator=torch.Generator().manual_seed(0))
        if not _same(self(probe), capture(model, self.layers, probe)):
            logger.warning("the traced forward pass differs from the eager one; capturing it eagerly")
            self.graph = None

    def __call__(self, batch: torch.Tensor) -> Captured:
        if self.graph is None or batch.shape != self._example.shape:
            return capture(self.model, self.layers, batch)
        with torch.inference_mode():
            output, *recorded = self.graph(batch)
        return output, dict(zip(self.layers, recorded, strict=True))


def _same(got: Captured, expected: Captured) -> bool:
    return torch.equal(got[0], expected[0]) and all(
        torch.equal(tensor, expected[1][name]) for name, tensor in got[1].items()
    )


def _trace(model: nn.Module, names: list[str], example: torch.Tensor) -> torch.jit.ScriptModule:
    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            output, captured = capture(self.model, names, batch)
            return (output, *(captured[name] for name in names))

    with warnings.catch_warnings():
        # The tracer warns about every size it turns into a constant (TF "same" padding): true, and why the
        # graph is only used at the size it was traced at.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            graph = torch.jit.trace(Recording(), example, check_trace=False)
        with torch.inference_mode():
            for _ in range(2):  # the executor profiles its first runs, then optimises: done here, once
                graph(example)
    return graph


def output_shapes(model: nn.Module, input_size: int, layers: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape without the batch dimension, from one pass on a dummy input.

    Run it on a ``meta``-device skeleton (see ``ModelRegistry.skeleton``) to get shapes with no memory or time cost.
    """
    device = next(model.parameters()).device
    names = module_names(model) if layers is None else list(layers)
    _, captured = capture(model, names, torch.zeros(1, 3, input_size, input_size, device=device))
    return {name: tuple(captured[name].shape[1:]) for name in names if name in captured}
