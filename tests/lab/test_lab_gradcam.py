"""Grad-CAM on real photos: it points at the cup, follows it when it moves, and leaves the shared model alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from app.engine.models import LoadedModel, ModelRegistry
from app.lab.gradcam import default_layer, grad_cam, view_to_batch

ROOT = Path(__file__).resolve().parents[2]
# The espresso cup in the 224-px crop of skimage's coffee photo (resized to 384×256, crop at column 80, row 16),
# read off the picture: the cup's rim and body, without the saucer, spoon and handle. It covers 43% of the crop.
CUP = (0, 30, 140, 184)  # top, left, bottom, right


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    registry = ModelRegistry.from_folder(ROOT / "models", ROOT / "weights")
    return registry.get(registry.default_id)


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    """The coffee photo as the network's preprocessing sees it: short side 256, then a window 224 wide."""
    return np.asarray(Image.fromarray(skimage.data.coffee()).resize((384, 256), Image.Resampling.BICUBIC))


def crop(image: np.ndarray, left: int) -> np.ndarray:
    return np.ascontiguousarray(image[16:240, left : left + 224])


def test_default_layer_is_the_last_convolutional_stage(model: LoadedModel) -> None:
    registry = ModelRegistry.from_folder(ROOT / "models", ROOT / "weights")
    assert default_layer(model.card, registry.output_shapes(model.card.id)) == "bn2"
    alexnet = registry.card("alexnet")  # its last curated layers are fully connected (1×1 "maps")
    assert default_layer(alexnet, registry.output_shapes("alexnet")) == "features.12"


def test_the_espresso_map_falls_on_the_cup(model: LoadedModel, coffee: np.ndarray) -> None:
    cam = grad_cam(model, crop(coffee, 80), layer="bn2")
    assert cam.label == "espresso" and cam.probability > 0.8
    assert cam.heatmap.shape == (7, 7) and cam.upsampled.shape == (224, 224) and (cam.upsampled >= 0).all()
    top, left, bottom, right = CUP
    area = (bottom - top) * (right - left) / 224**2
    mass = cam.mass_inside(*CUP)
    # Measured: 74% of the map's mass on 43% of the picture.
    assert mass >= 0.65 and mass - area >= 0.2, (mass, area)


@pytest.mark.parametrize("shift", [-48, 48])
def test_the_map_follows_the_cup_when_the_image_shifts(model: LoadedModel, coffee: np.ndarray, shift: int) -> None:
    # Moving the crop window left by `shift` moves the picture's content right by `shift` pixels.
    base = grad_cam(model, crop(coffee, 80), layer="bn2")
    moved = grad_cam(model, crop(coffee, 80 - shift), layer="bn2")
    assert moved.class_index == base.class_index
    row_change = moved.centre_of_mass()[0] - base.centre_of_mass()[0]
    column_change = moved.centre_of_mass()[1] - base.centre_of_mass()[1]
    # Measured: 39 px for 48 (a 7×7 map has one value per 32 px, so the estimate is coarse).
    assert 0.6 * abs(shift) <= column_change * np.sign(shift) <= 1.3 * abs(shift), column_change
    assert abs(row_change) < 12


def test_another_class_and_an_earlier_layer(model: LoadedModel, coffee: np.ndarray) -> None:
    cam = grad_cam(model, crop(coffee, 80), layer="blocks.4", class_index=968)  # 968: cup
    assert cam.label == "cup" and cam.heatmap.shape == (14, 14)
    with pytest.raises(ValueError, match="between 0 and 999"):
        grad_cam(model, crop(coffee, 80), layer="bn2", class_index=1000)


def test_the_shared_model_is_left_as_it_was_and_concurrent_passes_do_not_mix(
    model: LoadedModel, coffee: np.ndarray
) -> None:
    module = model.module
    image = crop(coffee, 80)
    alone = grad_cam(model, image, layer="bn2").heatmap
    other = view_to_batch(crop(coffee, 20), model.card.preprocess)
    with torch.inference_mode():
        expected = module(other)
    stop = threading.Event()
    outputs: list[torch.Tensor] = []

    def forward_loop() -> None:
        # Another user's forward passes on the same module, while Grad-CAM runs in this thread.
        while not stop.is_set():
            with torch.inference_mode():
                outputs.append(module(other))

    worker = threading.Thread(target=forward_loop)
    worker.start()
    try:
        maps = [grad_cam(model, image, layer="bn2").heatmap for _ in range(3)]
    finally:
        stop.set()
        worker.join()
    assert outputs, "the other thread ran no forward pass"
    assert all(np.allclose(m, alone, rtol=1e-4, atol=1e-6) for m in maps)
    assert all(torch.allclose(output, expected, atol=1e-5) for output in outputs)
    assert not any(p.requires_grad for p in module.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def test_captum_gives_the_textbook_map_with_frozen_parameters(model: LoadedModel, coffee: np.ndarray) -> None:
    # Grad-CAM by its definition (Selvaraju et al. 2017), with a hook of this test's own on a private copy of
    # the path: ReLU(Σ_k mean_xy(∂y_c/∂A_k) · A_k). The parameters stay frozen; only the input requires grad.
    image = crop(coffee, 80)
    cam = grad_cam(model, image, layer="bn2")
    saved: dict[str, torch.Tensor] = {}

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        saved["maps"] = output

    handle = model.module.get_submodule("bn2").register_forward_hook(keep)
    try:
        with torch.enable_grad():
            batch = view_to_batch(image, model.card.preprocess).requires_grad_(True)
            model.module(batch)[0, cam.class_index].backward()
    finally:
        handle.remove()
    maps = saved["maps"]
    assert maps.grad is not None
    weights = maps.grad.mean(dim=(2, 3), keepdim=True)
    textbook = torch.relu((weights * maps).sum(dim=1))[0].detach().numpy()
    assert np.allclose(cam.heatmap, textbook, rtol=1e-5, atol=1e-6)
