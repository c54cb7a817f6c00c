"""The registry with the real default model: weights remap, predictions on real photos, the torchvision cards."""

from pathlib import Path

import pytest
import torch

from app.config import PROJECT_ROOT
from app.engine.capture import capture, output_shapes
from app.engine.errors import ModelUnavailable, WeightsMissing
from app.engine.imaging import prepare_image
from app.engine.models import ModelRegistry
from tests.conftest import jpeg


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> ModelRegistry:
    return ModelRegistry.from_folder(PROJECT_ROOT / "models", tmp_path_factory.mktemp("weights"))


def top1(registry: ModelRegistry, name: str) -> str:
    model = registry.get("efficientnet_lite0")
    prepared = prepare_image(jpeg(name), model.card.preprocess, max_bytes=10**8, max_pixels=10**8)
    logits, _ = capture(model.module, [], prepared.tensor)
    return model.labels[int(logits.argmax())]


def test_the_default_model_loads_trained(registry):
    model = registry.get("efficientnet_lite0")
    assert model.trained
    assert registry.get("efficientnet_lite0") is model  # loaded once


@pytest.mark.parametrize(
    ("name", "expected"),
    [("coffee", {"espresso", "cup", "coffee mug"}), ("chelsea", {"tabby", "tiger cat", "Egyptian cat"})],
)
def test_real_photos_are_recognised(registry, name, expected):
    # Guards the preprocessing (mean = std = 0.5, bicubic) and the weight remap.
    assert top1(registry, name) in expected


def test_missing_weights_name_the_file_and_folder(registry):
    with pytest.raises(WeightsMissing, match=r"place alexnet-owt-7be5be79\.pth in .*weights"):
        registry.get("alexnet")


def test_a_corrupt_weights_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    registry = ModelRegistry.from_folder(PROJECT_ROOT / "models", tmp_path)
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        registry.get("resnet18")
    assert "could not be loaded" in (registry.load_error("resnet18") or "")
    assert registry.get("efficientnet_lite0").trained


@pytest.mark.parametrize(
    ("model_id", "layer", "shape"),
    [
        ("alexnet", "features.12", (256, 6, 6)),
        ("vgg16", "features.23", (512, 14, 14)),
        ("resnet18", "layer4", (512, 7, 7)),
        ("resnet50", "layer3.0", (1024, 14, 14)),
        ("efficientnet_lite0", "bn2", (1280, 7, 7)),
    ],
)
def test_skeleton_shapes_match_the_cards(registry, model_id, layer, shape):
    card = registry.card(model_id)
    shapes = output_shapes(registry.skeleton(model_id), card.preprocess.crop, [layer.name for layer in card.layers])
    assert set(shapes) == {layer.name for layer in card.layers}
    assert shapes[layer] == shape


def test_untrained_torchvision_model_runs_with_random_weights(tmp_path):
    registry = ModelRegistry.from_folder(PROJECT_ROOT / "models", tmp_path, allow_untrained=True)
    model = registry.get("resnet18")
    assert not model.trained
    output, captured = capture(model.module, ["layer2", "layer4"], torch.zeros(1, 3, 224, 224))
    assert output.shape == (1, 1000)
    assert captured["layer4"].shape == (1, 512, 7, 7)


def test_cards_parse_strictly(tmp_path):
    (tmp_path / "bad.toml").write_text((PROJECT_ROOT / "models" / "resnet18.toml").read_text() + "\ntypo_key = 1\n")
    with pytest.raises(ValueError, match="typo_key"):
        ModelRegistry.from_folder(Path(tmp_path), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["efficientnet_lite0", "alexnet", "vgg16", "resnet18", "resnet50"])
def test_every_card_is_analysed_through_a_traced_pass_that_records_what_the_eager_one_does(tmp_path, model_id):
    # Traced at load, and checked there against the eager pass; again here on a real photo.
    registry = ModelRegistry.from_folder(PROJECT_ROOT / "models", tmp_path, allow_untrained=True)
    model = registry.get(model_id)
    assert model.capture.graph is not None
    batch = prepare_image(jpeg("astronaut"), model.card.preprocess, max_bytes=10**8, max_pixels=10**8).tensor
    output, recorded = model.capture(batch)
    expected_output, expected = capture(model.module, [layer.name for layer in model.card.layers], batch)
    assert torch.equal(output, expected_output)
    assert all(torch.equal(recorded[name], expected[name]) for name in expected)
