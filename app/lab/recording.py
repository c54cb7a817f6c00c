"""Record a few layers of a shared network, stopping the forward pass as soon as they have all fired.

The engine's :func:`app.engine.capture.capture` runs the whole network under inference mode; experiments need
two things it does not give: stopping early (an orientation run on ``blocks.1`` need not pay for the head) and
gradients (linear receptive fields, Grad-CAM). Hooks here follow the same rule as ``capture``: registered for
one call, removed before returning, and acting only on the forward pass of the thread that registered them,
so concurrent users of the same module never see or change each other's tensors.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

import torch
from torch import nn

from app.engine.errors import UnknownLayer

Reduce = Callable[[torch.Tensor], torch.Tensor]


class _AllRecorded(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised from a hook to end the forward pass once every requested layer has produced its output."""


def resolve_layers(module: nn.Module, layers: Iterable[str], model_id: str) -> dict[str, nn.Module]:
    """The named sub-modules, in the order given; an unknown name raises :class:`UnknownLayer`."""
    modules = dict(module.named_modules())
    resolved: dict[str, nn.Module] = {}
    for name in layers:
        if not name or name not in modules:
            raise UnknownLayer(name, model_id)
        resolved[name] = modules[name]
    return resolved


def as_maps(output: torch.Tensor) -> torch.Tensor:
    """A layer output as (B, C, H, W): a fully connected layer's units become channels with 1×1 maps."""
    if output.dim() == 2:
        return output[:, :, None, None]
    if output.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) or (B, C) output, got shape {tuple(output.shape)}")
    return output


def record(
    module: nn.Module,
    layers: Iterable[str],
    batch: torch.Tensor,
    *,
    reduce: Reduce | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``module`` on ``batch`` until each named layer has produced its output, and return those outputs.

    ``reduce`` is applied inside the hook (for example "the rectified centre unit"), so a layer's full maps
    need not be kept. Without it, outputs of all but the last layer are cloned, because a later in-place
    activation (``ReLU(inplace=True)`` after a convolution) would otherwise overwrite what was recorded.
    Grad mode is the caller's: wrap in ``torch.inference_mode()`` to measure, in ``torch.enable_grad()`` to
    differentiate. Unknown names raise ``KeyError``; use :func:`resolve_layers` first for a friendly error.
    """
    names = list(dict.fromkeys(layers))
    modules = dict(module.named_modules())
    owner = threading.get_ident()
    recorded: dict[str, torch.Tensor] = {}
    handles = []

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if threading.get_ident() != owner or name in recorded or not isinstance(output, torch.Tensor):
                return
            maps = as_maps(output)
            last = len(recorded) == len(names) - 1
            recorded[name] = reduce(maps) if reduce is not None else (maps if last else maps.clone())
            if last:
                raise _AllRecorded

        return hook

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(recorder(name)))
        with contextlib.suppress(_AllRecorded):
            module(batch)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in names if name not in recorded]
    if missing:
        raise ValueError(f"these layers produced no tensor output: {', '.join(missing)}")
    return recorded


def centre_units(maps: torch.Tensor) -> torch.Tensor:
    """(B, C) values of the unit at the centre of each (B, C, H, W) map (the lower-right of the middle four)."""
    return maps[:, :, maps.shape[2] // 2, maps.shape[3] // 2]


def rectified_centre(maps: torch.Tensor) -> torch.Tensor:
    """The centre unit's response as a firing rate: negative values mean silence, so they count as 0."""
    return centre_units(maps).clamp_min(0).float()


def rectified_mean(maps: torch.Tensor) -> torch.Tensor:
    """The mean firing rate of each channel's units over the whole map, each unit rectified at 0 first."""
    return maps.clamp_min(0).float().mean(dim=(2, 3))
