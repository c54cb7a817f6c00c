"""The model registry: cards to modules, loaded once per process, lazily and thread-safely."""

from __future__ import annotations

import ast
import importlib.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from app.engine.capture import TracedCapture, output_shapes
from app.engine.cards import ModelCard, load_cards
from app.engine.efficientnet_lite import efficientnet_lite
from app.engine.errors import ModelUnavailable, UnknownModel, WeightsMissing
from app.engine.receptive_field import ReceptiveField, receptive_fields
from app.engine.weights import WeightsStatus, locate_weights, read_state_dict

logger = logging.getLogger(__name__)
F = TypeVar("F")  # a fact worked out once per model from its skeleton


def build_architecture(card: ModelCard) -> nn.Module:
    """Construct the card's network with freshly initialised weights; never downloads anything."""
    arch = card.architecture
    if arch.source == "builtin":
        return efficientnet_lite(arch.constructor)
    from torchvision.models import get_model

    return get_model(arch.constructor, weights=None)


@cache
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, as torchvision ships them (no download).

    Read from torchvision's source rather than imported: importing torchvision imports ``torch._dynamo``, about
    1.3 s of a start-up that otherwise never needs it. Should that file change shape, torchvision's public API.
    """
    found = importlib.util.find_spec("torchvision")  # finds the package without importing it
    if found is not None and found.origin is not None:
        categories = _assigned_list(Path(found.origin).parent / "models" / "_meta.py", "_IMAGENET_CATEGORIES")
        if categories is not None and len(categories) == 1000:
            return categories
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _assigned_list(source: Path, name: str) -> list[str] | None:
    """The list of strings assigned to ``name`` at the top of a Python file, read without running the file."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return value
    return None


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference, with what the engine needs to know about it."""

    card: ModelCard
    module: nn.Module
    trained: bool
    labels: list[str] = field(repr=False)
    # The forward pass of an analysis: the card's layers recorded, at the card's input size.
    capture: TracedCapture = field(repr=False)

    @property
    def input_size(self) -> int:
        return self.card.preprocess.crop


class ModelRegistry:
    """Holds the cards and the modules built from them.

    Each model loads at most once (a lock per model), on first use or from ``preload``; a model whose weights
    fail to load keeps its error so the rest of the app goes on serving and ``/readyz`` can say why.
    """

    def __init__(
        self,
        cards: dict[str, ModelCard],
        weights_dir: Path,
        *,
        default_id: str | None = None,
        allow_untrained: bool = False,
    ) -> None:
        if default_id is not None and default_id not in cards:
            raise ValueError(f"the default model '{default_id}' has no card; known: {', '.join(cards)}")
        self.cards = cards
        self._default_id = default_id
        self.weights_dir = weights_dir
        self.allow_untrained = allow_untrained
        self._loaded: dict[str, LoadedModel] = {}
        self._errors: dict[str, str] = {}
        self._skeletons: dict[str, nn.Module] = {}
        self._fields: dict[str, dict[str, ReceptiveField]] = {}
        self._shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        self._param_counts: dict[str, int] = {}
        self._locks = {model_id: threading.Lock() for model_id in cards}
        # Facts (fields, shapes, parameter counts) are worked out once under these; not under the load locks, which
        # the skeleton takes.
        self._fact_locks = {model_id: threading.Lock() for model_id in cards}

    @classmethod
    def from_folder(
        cls, folder: Path, weights_dir: Path, *, default_id: str | None = None, allow_untrained: bool = False
    ) -> ModelRegistry:
        return cls(load_cards(folder), weights_dir, default_id=default_id, allow_untrained=allow_untrained)

    @cached_property
    def default_id(self) -> str:
        if self._default_id is not None:
            return self._default_id
        defaults = [card.id for card in self.cards.values() if card.default]
        return defaults[0] if defaults else next(iter(self.cards))

    def card(self, model_id: str) -> ModelCard:
        try:
            return self.cards[model_id]
        except KeyError:
            raise UnknownModel(model_id) from None

    def weights_status(self, model_id: str) -> WeightsStatus:
        return locate_weights(self.card(model_id), self.weights_dir)

    def is_loaded(self, model_id: str) -> bool:
        return model_id in self._loaded

    def load_error(self, model_id: str) -> str | None:
        return self._errors.get(model_id)

    def skeleton(self, model_id: str) -> nn.Module:
        """The architecture on torch's ``meta`` device: shapes and structure at no memory cost, no weights."""
        card = self.card(model_id)
        with self._locks[model_id]:
            if model_id not in self._skeletons:
                with torch.device("meta"):
                    self._skeletons[model_id] = build_architecture(card).eval()
            return self._skeletons[model_id]

    def receptive_fields(self, model_id: str) -> dict[str, ReceptiveField]:
        """Every module's theoretical receptive field at the card's input size, computed once from the skeleton."""
        return self._worked_out_once(self._fields, model_id, receptive_fields)

    def output_shapes(self, model_id: str) -> dict[str, tuple[int, ...]]:
        """Every module's output shape (no batch dimension), in network order, computed once from the skeleton.

        Modules the forward pass never calls (drop-path at inference) are absent.
        """
        return self._worked_out_once(self._shapes, model_id, output_shapes)

    def num_params(self, model_id: str) -> int:
        """The architecture's parameter count, counted once from the skeleton (every analysis page shows it)."""
        return self._worked_out_once(self._param_counts, model_id, _count_parameters)

    def _worked_out_once(self, facts: dict[str, F], model_id: str, work: Callable[[nn.Module, int], F]) -> F:
        """``facts[model_id]``, from ``work(skeleton, input size)`` on first call; a second caller meanwhile waits
        for the first one's result instead of working it out again."""
        if model_id not in facts:
            crop = self.card(model_id).preprocess.crop  # an unknown model fails here, before any lock
            with self._fact_locks[model_id]:
                if model_id not in facts:
                    facts[model_id] = work(self.skeleton(model_id), crop)
        return facts[model_id]

    def get(self, model_id: str) -> LoadedModel:
        """The loaded model, loading it on first call. Raises if its weights are missing or broken."""
        card = self.card(model_id)
        if model_id in self._loaded:
            return self._loaded[model_id]
        with self._locks[model_id]:
            if model_id in self._loaded:
                return self._loaded[model_id]
            if model_id in self._errors:
                raise ModelUnavailable(self._errors[model_id])
            loaded = self._load(card)
            self._loaded[model_id] = loaded
            return loaded

    def _load(self, card: ModelCard) -> LoadedModel:
        status = locate_weights(card, self.weights_dir)
        if not status.available and not self.allow_untrained:
            raise WeightsMissing(status.reason)
        module = build_architecture(card)
        if status.available:
            assert status.path is not None
            try:
                module.load_state_dict(read_state_dict(card, status.path, module))
            except Exception as error:  # any failure to read weights leaves this model out, not the app
                message = f"the weights of {card.name} at {status.path} could not be loaded: {error}"
                self._errors[card.id] = message
                logger.error(message)
                raise ModelUnavailable(message) from error
        else:
            logger.warning("%s has no weights here; serving it untrained (random weights)", card.id)
        module.eval().requires_grad_(False)
        logger.info("loaded %s (%s)", card.id, "trained" if status.available else "untrained")
        layers = [layer.name for layer in card.layers]
        return LoadedModel(
            card=card,
            module=module,
            trained=status.available,
            labels=imagenet_categories(),
            capture=TracedCapture(module, layers, card.preprocess.crop),
        )


def _count_parameters(skeleton: nn.Module, _input_size: int) -> int:
    return sum(parameter.numel() for parameter in skeleton.parameters())
