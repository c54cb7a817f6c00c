"""The builtin EfficientNet-Lite is timm's ``tf_efficientnet_lite*``: same parameters, same outputs, same fields."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

from app.engine.capture import capture, module_names
from app.engine.efficientnet_lite import VARIANTS, efficientnet_lite
from app.engine.models import imagenet_categories
from app.engine.receptive_field import receptive_fields


def _pair(variant: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's network with its random initialisation, and ours holding the same tensors."""
    torch.manual_seed(0)
    reference = timm.create_model(f"tf_{variant}", pretrained=False).eval()
    # Random running statistics too, so that batch norm is not the identity it is at initialisation.
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    ours = efficientnet_lite(variant).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_module_computes_what_timms_module_of_that_name_computes(variant: str) -> None:
    reference, ours = _pair(variant)
    names = module_names(ours)
    assert set(names) <= set(module_names(reference))
    # An odd size, so that TF "same" padding is uneven in both directions at every stride-2 layer.
    batch = torch.randn(1, 3, 227, 211)
    expected_logits, expected = capture(reference, names, batch)
    logits, got = capture(ours, names, batch)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    assert set(got) == set(expected)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=f"module {name}")


def test_receptive_fields_match_timms() -> None:
    reference, ours = _pair("efficientnet_lite0")
    expected = receptive_fields(reference, 224)
    got = receptive_fields(ours, 224)
    for name, field in got.items():
        assert field == expected[name], name


def test_unknown_variant_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite0, efficientnet_lite1"):
        efficientnet_lite("efficientnet_lite9")


def test_imagenet_categories_are_torchvisions() -> None:
    from torchvision.models import ResNet50_Weights

    assert imagenet_categories() == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


def test_serving_the_default_model_never_imports_timm_or_torchvision() -> None:
    # Either pulls in torch._dynamo, over a second of every start-up. The receptive fields need it themselves (their
    # dispatch mode imports it) but come after start-up; loading and running the model must not.
    script = (
        "import sys, torch\n"
        "from app.config import Settings\n"
        "from app.engine.models import ModelRegistry\n"
        "def imported(): return sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules)\n"
        "settings = Settings()\n"
        "registry = ModelRegistry.from_folder(settings.models_dir, settings.weights_dir)\n"
        "model = registry.get(registry.default_id)\n"
        "model.module(torch.zeros(1, 3, 224, 224))\n"
        "print(len(model.labels), imported())\n"
        "registry.receptive_fields(registry.default_id)\n"
        "print(imported())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["1000 []", "['torch._dynamo']"]
