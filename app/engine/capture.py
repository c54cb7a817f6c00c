"""Record chosen layers' outputs during one forward pass."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

logger = logging.getLogger(__name__)
# A model's output and each recorded layer's output (batch dimension kept), as ``capture`` returns them.
Captured = tuple[torch.Tensor, dict[str, torch.Tensor]]


def module_names(model: nn.Module) -> list[str]:
    """Every addressable module name (dotted path), in definition order; the root is left out."""
    return [name for name, _ in model.named_modules() if name]


def capture(
    model: nn.Module, layers: Iterable[str], batch: torch.Tensor, *, copies: Collection[str] | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``model`` on ``batch`` and return its output and each named layer's output (batch dimension kept).

    Hooks are registered for this call only and removed before returning. Each hook records only the forward
    pass of the thread that registered it, so concurrent captures on one shared module never mix their results.
    Names must exist in the model (``KeyError`` otherwise).

    Each output is recorded as a copy, since the next module may work in place (AlexNet's ``ReLU(inplace=True)``
    after each conv) and would otherwise turn a conv's recorded output into the ReLU's; with ``copies``, only the
    layers it names are (see ``layers_needing_copies``).
    """
    captured: dict[str, torch.Tensor] = {}

    def record(name: str, output: torch.Tensor) -> None:
        captured[name] = output.clone() if copies is None or name in copies else output

    with torch.inference_mode(), _recording(model, layers, record):
        output = model(batch)
    return output, captured


def layers_needing_copies(model: nn.Module, layers: Iterable[str], example: torch.Tensor) -> set[str]:
    """The layers among ``layers`` whose output, kept as it is, would not stay that output: a later operation of
    the pass changes it in place, or it is a view into a larger tensor (keeping it would keep all of that).

    Seen in one pass on ``example`` from each tensor's version counter, which in-place operations advance (and
    which inference mode does not keep, hence ``no_grad``). A copy costs a pass on one thread about 0.6 ms
    for EfficientNet-Lite0's ten layers, none of which needs one.
    """
    seen: list[tuple[str, torch.Tensor, int]] = []

    def record(name: str, output: torch.Tensor) -> None:
        seen.append((name, output, output._version))

    with torch.no_grad(), _recording(model, layers, record):
        model(example)
    return {
        name
        for name, output, version in seen
        if output._version != version or output.untyped_storage().nbytes() > output.numel() * output.element_size()
    }


@contextmanager
def _recording(model: nn.Module, layers: Iterable[str], record: Callable[[str, torch.Tensor], None]) -> Iterator[None]:
    """Within the block, ``record(name, output)`` after each named layer's forward on this thread."""
    modules = dict(model.named_modules())
    owner = threading.get_ident()
    handles = []

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if threading.get_ident() == owner and isinstance(output, torch.Tensor):
                record(name, output)

        return hook

    try:
        for name in layers:
            handles.append(modules[name].register_forward_hook(recorder(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


class TracedCapture:
    """``capture`` of ``layers`` for one (1, 3, ``input_size``, ``input_size``) batch, traced once into a TorchScript
    graph: the same outputs, bit for bit, without Python between the kernels.

    Eager, each module's call runs Python under the GIL: two workers' passes side by side then wait for each other,
    and one pass spends a fifth of its time there (``docs/performance.md``). The graph shares the model's weights.

    A trace follows the path of its example only, so it suits networks without control flow on their values (the
    cards' CNNs). It is checked against the eager pass on a random batch before use; a model whose trace fails or
    differs (``graph`` is then None), and a batch of another shape, are captured eagerly.

    The graph copies only the recorded outputs that need it (``copies``, from ``layers_needing_copies``); the
    eager capture copies them all.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], input_size: int) -> None:
        self.model = model
        self.layers = list(layers)
        self._example = torch.zeros(1, 3, input_size, input_size)
        self.graph: torch.jit.ScriptModule | None = None
        self.copies = set(self.layers)  # the eager capture's: every layer, until a graph is in use
        try:
            copies = layers_needing_copies(model, self.layers, self._example)
            graph = _trace(model, self.layers, copies, self._example)
        except Exception:  # a model the tracer cannot follow still works, eagerly
            logger.warning("the forward pass could not be traced; capturing it eagerly", exc_info=True)
            return
        probe = torch.randn(self._example.shape, generator=torch.Generator().manual_seed(0))
        expected = capture(model, self.layers, probe)
        self.graph, self.copies = graph, copies
        if not _same(self(probe), expected):
            logger.warning("the traced forward pass differs from the eager one; capturing it eagerly")
            self.graph, self.copies = None, set(self.layers)

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


def _trace(model: nn.Module, names: list[str], copies: set[str], example: torch.Tensor) -> torch.jit.ScriptModule:
    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            output, captured = capture(self.model, names, batch, copies=copies)
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
