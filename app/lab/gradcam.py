"""Grad-CAM: which parts of the image pushed the network towards a class (Selvaraju et al. 2017).

The map is ``ReLU(Σ_k α_k A_k)``: the layer's channels ``A_k`` weighted by ``α_k``, the spatial mean of the class
score's gradient with respect to that channel. Computed with captum's ``LayerGradCam``.

The model is shared by every thread of the server, and captum hooks the module it is given; hooking a layer of
the shared model would let a concurrent analysis's forward pass run through those hooks. So captum is given a
private ``nn.Identity`` probe instead, spliced in after the chosen layer by a hook that acts only in this
thread: captum's hooks then see this request's tensors and nothing else. Parameters stay frozen
(``requires_grad=False``); the gradient reaches the activations because captum marks the probe's output as
requiring it, which needs grad mode on and inference mode off, both set here for this thread only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.engine.cards import ModelCard, Preprocess
from app.engine.models import LoadedModel
from app.lab.recording import resolve_layers
from app.lab.stimuli import to_network_input

SOURCE = "Selvaraju et al. 2017, Grad-CAM: visual explanations from deep networks via gradient-based localization, ICCV"


@dataclass(frozen=True)
class GradCam:
    """A class's Grad-CAM at one layer for one image."""

    layer: str
    class_index: int
    label: str
    probability: float
    heatmap: np.ndarray  # (h, w) float32 at the layer's resolution, ≥ 0
    upsampled: np.ndarray  # (H, W) float32 at the input's resolution, ≥ 0

    def centre_of_mass(self, floor: float = 0.5) -> tuple[float, float]:
        """(row, column) in input pixels of the centre of mass of the map's hot spot: the part above ``floor``
        times its maximum (the image centre when the map is 0). The floor keeps the low, smeared tail of the
        upsampled map from pulling the estimate towards the middle."""
        rows, columns = self.upsampled.shape
        hot = np.clip(self.upsampled - floor * float(self.upsampled.max()), 0.0, None)
        total = float(hot.sum())
        if total <= 0:
            return (rows - 1) / 2, (columns - 1) / 2
        row_index, column_index = np.indices(hot.shape)
        return float((hot * row_index).sum() / total), float((hot * column_index).sum() / total)

    def mass_inside(self, top: int, left: int, bottom: int, right: int) -> float:
        """Share of the map's mass inside a box (rows ``top:bottom``, columns ``left:right``, input pixels)."""
        total = float(self.upsampled.sum())
        return float(self.upsampled[top:bottom, left:right].sum()) / total if total > 0 else 0.0


def default_layer(card: ModelCard, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The last curated layer that still has a spatial map (more than 1×1): the last convolutional stage.

    ``shapes`` are the model's output shapes (``ModelRegistry.output_shapes``, from the weightless skeleton): a real
    forward pass here would run on a web thread and give it an OpenMP team that slows every later analysis.
    """
    names = [layer.name for layer in card.layers]
    spatial = [name for name in names if len(shapes.get(name, ())) == 3 and shapes[name][1] * shapes[name][2] > 1]
    return spatial[-1] if spatial else names[-1]


def _spliced_forward(module: nn.Module, target: nn.Module, probe: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    owner = threading.get_ident()

    def splice(_module: nn.Module, _inputs: object, output: object) -> object:
        if threading.get_ident() != owner or not isinstance(output, torch.Tensor):
            return None  # other threads' passes go through untouched
        return probe(output)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        handle = target.register_forward_hook(splice)
        try:
            result: torch.Tensor = module(batch)
            return result
        finally:
            handle.remove()

    return forward


def view_to_batch(view: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """A (H, W, 3) uint8 image as the network saw it → its normalised (1, 3, H, W) batch."""
    pixels = torch.from_numpy(np.array(view, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255.0)
    return to_network_input(pixels[None], preprocess)


def grad_cam(model: LoadedModel, view: np.ndarray, *, layer: str, class_index: int | None = None) -> GradCam:
    """Grad-CAM of ``class_index`` (the top prediction when ``None``) at ``layer`` for the (H, W, 3) uint8
    ``view``. Raises ``ValueError`` for a class index outside the model's outputs."""
    from captum.attr import LayerAttribution, LayerGradCam

    target = resolve_layers(model.module, [layer], model.card.id)[layer]
    batch = view_to_batch(view, model.card.preprocess)
    probe = nn.Identity()
    forward = _spliced_forward(model.module, target, probe)
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            logits = forward(batch)
        classes = logits.shape[1]
        if class_index is None:
            class_index = int(logits[0].argmax())
        if not 0 <= class_index < classes:
            raise ValueError(f"class_index must be between 0 and {classes - 1}")
        attribution = LayerGradCam(forward, probe).attribute(batch, target=class_index, relu_attributions=True)
        upsampled = LayerAttribution.interpolate(attribution, tuple(batch.shape[-2:]), interpolate_mode="bilinear")
    probability = float(torch.softmax(logits[0].float(), dim=0)[class_index])
    labels = model.labels
    return GradCam(
        layer=layer,
        class_index=class_index,
        label=labels[class_index] if class_index < len(labels) else str(class_index),
        probability=probability,
        heatmap=attribution[0, 0].detach().float().numpy().copy(),
        upsampled=upsampled[0, 0].detach().float().clamp_min(0).numpy().copy(),
    )
