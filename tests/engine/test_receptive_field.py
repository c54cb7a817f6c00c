"""Theoretical receptive fields: published values, hand-computed toys, and an empirical gradient check."""

from __future__ import annotations

import math
import time

import pytest
import timm
import torch
import torchvision
from torch import nn

from app.engine.receptive_field import ReceptiveField, receptive_fields, rf_in_degrees


def _named(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _called(model: nn.Module, input_size: int = 224) -> set[str]:
    """Names of the modules a forward pass actually calls (some, like unused drop_path, never run)."""
    seen: set[str] = set()
    handles = [
        module.register_forward_hook(lambda _m, _i, _o, name=name: seen.add(name))
        for name, module in model.named_modules()
        if name
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, input_size, input_size))
    for handle in handles:
        handle.remove()
    return seen


def _rf(result: dict[str, ReceptiveField], *names: str) -> list[int]:
    return [result[name].rf_px for name in names]


# ---------------------------------------------------------------------------------------------------------------
# Published values (224-px input, torchvision module names)
# ---------------------------------------------------------------------------------------------------------------


def test_alexnet_matches_published_fields() -> None:
    result = receptive_fields(torchvision.models.alexnet(weights=None), 224)
    names = ("features.0", "features.2", "features.3", "features.6", "features.10", "features.12")
    assert _rf(result, *names) == [11, 19, 51, 99, 163, 195]
    assert [result[n].stride_px for n in names] == [4, 8, 8, 16, 16, 32]
    # conv1 11x11/4 padded by 2: unit 0 starts 2 px before the image, so its centre is at pixel 3.
    assert result["features.0"].padding_px == 2
    assert result["features.0"].centre_of_first_unit_px == 3
    assert all(result[n].exact for n in result)
    # The classifier mixes every position of the last map: global, spanning the image.
    assert result["classifier.5"].is_global and result["classifier.5"].covers_input
    assert not result["features.12"].is_global


def test_vgg16_matches_published_fields() -> None:
    result = receptive_fields(torchvision.models.vgg16(weights=None), 224)
    assert _rf(result, "features.16", "features.23", "features.30") == [44, 100, 212]
    assert [result[n].stride_px for n in ("features.16", "features.23", "features.30")] == [8, 16, 32]


def test_resnet50_matches_published_fields_for_every_module() -> None:
    model = torchvision.models.resnet50(weights=None)
    result = receptive_fields(model, 224)
    assert list(result) == _named(model)  # every module, in model order
    assert _rf(result, "layer2.3", "layer3.0", "layer4.0", "layer4") == [91, 107, 299, 427]
    assert [result[n].stride_px for n in ("layer2.3", "layer3.0", "layer4.0", "layer4")] == [8, 16, 32, 32]
    # The stride-2 1x1 shortcut sees less than the 3x3 path; the block reports the union (max over paths).
    assert result["layer3.0.downsample"].rf_px < result["layer3.0.bn3"].rf_px == result["layer3.0"].rf_px
    assert not result["layer2"].covers_input and result["layer3"].covers_input  # 267 px >= 224 px
    assert result["avgpool"].is_global and result["fc"].is_global and result["fc"].covers_input


def test_resnet50_is_fast() -> None:
    model = torchvision.models.resnet50(weights=None)
    receptive_fields(model, 224)  # warm-up: first-call allocator and dispatcher costs
    timings = []
    for _ in range(5):  # best of five: the CI box may be busy; the bound is on the work, not the noise
        start = time.perf_counter()
        receptive_fields(model, 224)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 2.0, timings


def test_resnet18_runs_and_leaves_the_model_untouched() -> None:
    model = torchvision.models.resnet18(weights=None)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = receptive_fields(model, 224)
    assert list(result) == _named(model)
    assert _rf(result, "conv1", "maxpool", "layer1", "layer2", "layer3", "layer4") == [7, 11, 43, 99, 211, 435]
    # A module called several times (the block's shared ReLU) reports its last call: the block output.
    assert result["layer1.0.relu"] == result["layer1.0"]
    assert all(m.training for m in model.modules())  # training flags restored
    assert all(not m._forward_hooks for m in model.modules())  # our hooks removed
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats not updated


# ---------------------------------------------------------------------------------------------------------------
# timm and TF "same" padding
# ---------------------------------------------------------------------------------------------------------------


def test_tf_efficientnet_lite0_every_module_and_monotone_stages() -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    result = receptive_fields(model, 224)
    # Every module the forward pass calls has a field (drop_path of blocks without a skip never runs).
    assert set(result) == _called(model)
    assert list(result) == [n for n in _named(model) if n in result]
    stem = result["conv_stem"]
    # TF "same" 3x3/2 on 224 px pads 0 before and 1 after: the stem field starts at pixel 0.
    assert (stem.rf_px, stem.stride_px, stem.padding_px) == (3, 2, 0)
    chain = ["conv_stem", "bn1", *(f"blocks.{i}" for i in range(7)), "bn2"]
    fields = _rf(result, *chain)
    assert fields == sorted(fields), fields
    assert fields[2] == 7 and fields[-1] > 224  # blocks.0 is one depthwise 3x3 at jump 2
    assert result["global_pool"].is_global and result["classifier"].covers_input
    assert all(r.exact for r in result.values())


@pytest.mark.parametrize(("size", "pad_before"), [(224, 0), (225, 1), (7, 1), (8, 0)])
def test_tf_same_padding_depends_on_input_size(size: int, pad_before: int) -> None:
    # TF: pad_total = max((ceil(in/s) - 1) * s + (k - 1) * d + 1 - in, 0), pad_before = pad_total // 2.
    out = math.ceil(size / 2)
    expected = max((out - 1) * 2 + 3 - size, 0) // 2
    assert expected == pad_before
    conv = timm.layers.create_conv2d(3, 4, 3, stride=2, padding="same")
    pool = timm.layers.create_pool2d("max", 3, stride=2, padding="same")
    assert type(conv).__name__ == "Conv2dSame" and type(pool).__name__ == "MaxPool2dSame"
    result = receptive_fields(nn.Sequential(conv, pool), size)
    assert (result["0"].rf_px, result["0"].stride_px, result["0"].padding_px) == (3, 2, pad_before)
    pool_out = math.ceil(out / 2)
    pool_pad = max((pool_out - 1) * 2 + 3 - out, 0) // 2
    assert result["1"].rf_px == 3 + 2 * 2
    assert result["1"].stride_px == 4
    assert result["1"].padding_px == pad_before + pool_pad * 2


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_torch_string_padding() -> None:
    # torch's 'same' pads d(k-1) in total, the extra pixel on the right; 'valid' pads nothing.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 4, padding="same"),
        nn.Conv2d(4, 4, 3, padding="valid", dilation=2),
        nn.Conv2d(4, 4, 3, padding="same", dilation=2),
    )
    result = receptive_fields(model, 32)
    assert (result["0"].rf_px, result["0"].padding_px) == (4, 1)
    assert (result["1"].rf_px, result["1"].padding_px) == (8, 1)
    assert (result["2"].rf_px, result["2"].padding_px) == (12, 3)


# ---------------------------------------------------------------------------------------------------------------
# Hand-computed toys
# ---------------------------------------------------------------------------------------------------------------


def test_dilated_chain_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, dilation=2, padding=2),  # k'=5: r=5, J=1, P=2
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, stride=2, padding=1),  # r=5+2*1=7, J=2, P=2+1*1=3
        nn.Conv2d(2, 2, 3, dilation=3, padding=3),  # k'=7: r=7+6*2=19, J=2, P=3+3*2=9
        nn.AvgPool2d(2),  # r=19+1*2=21, J=4, P=9
    )
    result = receptive_fields(model, 64, in_chans=1)
    got = [(result[n].rf_px, result[n].stride_px, result[n].padding_px) for n in ("0", "1", "2", "3", "4")]
    assert got == [(5, 1, 2), (5, 1, 2), (7, 2, 3), (19, 2, 9), (21, 4, 9)]
    assert result["3"].centre_of_first_unit_px == -9 + (19 - 1) / 2
    assert result["3"].centre_px(5) == -9 + 5 * 2 + 9


def test_conv1d_and_pool1d() -> None:
    model = nn.Sequential(
        nn.Conv1d(2, 4, 5, stride=2, padding=2),  # r=5, J=2, P=2
        nn.MaxPool1d(3, 2, 1),  # r=5+2*2=9, J=4, P=2+1*2=4
        nn.Conv1d(4, 4, 3, dilation=2, padding=2),  # k'=5: r=9+4*4=25, J=4, P=4+2*4=12
    )
    result = receptive_fields(model, 100, spatial_dims=1)
    got = [(result[n].rf_px, result[n].stride_px, result[n].padding_px) for n in ("0", "1", "2")]
    assert got == [(5, 2, 2), (9, 4, 4), (25, 4, 12)]
    assert len(result["2"].axes) == 1


def test_non_square_kernels_report_each_axis() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, (1, 7), padding=(0, 3)), nn.Conv2d(4, 4, (5, 1), padding=(2, 0)))
    result = receptive_fields(model, 32)
    assert [a.rf_px for a in result["0"].axes] == [1, 7]
    assert [a.rf_px for a in result["1"].axes] == [5, 7]
    assert result["1"].rf_px == 7


class TwoBranch(nn.Module):
    """Residual add of a 7x7 branch and a two-3x3 branch, concatenated with a shifted 3x3 branch."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(1, 2, 7, padding=3)  # unit 0 sees [-3, 3]
        self.deep = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))  # [-2, 2]
        # 3x3 unpadded, then shifted right by 4 px and cropped by 2: unit 0 sees [-4, -2].
        self.shifted = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ZeroPad2d((4, -2, 4, -2)))
        self.head = nn.Conv2d(4, 2, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = self.wide(x) + self.deep(x)
        merged = torch.cat([summed, self.shifted(x)], dim=1)
        return self.head(merged)


def test_two_branch_max_over_paths_by_hand() -> None:
    result = receptive_fields(TwoBranch(), 32, in_chans=1)
    assert (result["wide"].rf_px, result["wide"].padding_px) == (7, 3)
    assert (result["deep"].rf_px, result["deep"].padding_px) == (5, 2)
    assert (result["shifted"].rf_px, result["shifted"].padding_px) == (3, 4)
    # head: union of [-3, 3], [-2, 2] and [-4, -2] is [-4, 3] (r=8, P=4); then 3x3/2 padded 1 at J=1:
    # r = 8 + 2 = 10, J = 2, P = 4 + 1 = 5.
    head = result["head"]
    assert (head.rf_px, head.stride_px, head.padding_px) == (10, 2, 5)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * torch.sigmoid(self.gate(y.mean((2, 3), keepdim=True)))


def test_global_context_gate() -> None:
    model = nn.Sequential(SqueezeExcite(), nn.Conv2d(4, 4, 3, padding=1))
    strict = receptive_fields(model, 16)
    assert strict["0.conv"].rf_px == 3 and not strict["0.conv"].is_global
    assert strict["0"].is_global and strict["0"].covers_input and strict["1"].is_global
    local = receptive_fields(model, 16, ignore_global_context=True)
    assert (local["0"].rf_px, local["0"].is_global) == (3, False)
    assert (local["1"].rf_px, local["1"].is_global) == (5, False)


def test_global_pool_and_linear_cover_the_input() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    result = receptive_fields(model, 32)
    assert not result["0"].covers_input
    for name in ("1", "2", "3"):
        assert result[name].is_global and result[name].covers_input
    # Global pooling is a kernel as large as the 16-unit map: r = 3 + 15 * 2.
    assert result["1"].rf_px == 33


def test_input_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        receptive_fields(nn.Conv2d(3, 3, 3), 0)


# ---------------------------------------------------------------------------------------------------------------
# Degrees
# ---------------------------------------------------------------------------------------------------------------


def test_rf_in_degrees() -> None:
    assert rf_in_degrees(19, 224, 8.0) == pytest.approx(19 * 8 / 224)
    assert rf_in_degrees(19, 224, 8.0) == pytest.approx(0.679, abs=5e-4)
    assert rf_in_degrees(427, 224, 8.0) == 8.0  # clipped at the image
    with pytest.raises(ValueError):
        rf_in_degrees(3, 0, 8.0)


# ---------------------------------------------------------------------------------------------------------------
# Empirical check of the tracer: the support of the input gradient of one output unit
# ---------------------------------------------------------------------------------------------------------------


def _positive_linear(model: nn.Module) -> nn.Module:
    """Make every path carry signal: positive averaging weights, zero bias, avg instead of max pooling."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.MaxPool2d):
            setattr(model, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
        else:
            _positive_linear(child)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0 / module.weight[0].numel())
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model.double().eval()


def _gradient_support(model: nn.Module, name: str, size: int, in_chans: int) -> tuple[list[int], list[int], int]:
    """First/last input row and column reached from the centre unit of module ``name``'s output."""
    captured: list[torch.Tensor] = []
    handle = dict(model.named_modules())[name].register_forward_hook(lambda _m, _i, out: captured.append(out))
    image = torch.ones(1, in_chans, size, size, dtype=torch.float64, requires_grad=True)
    model(image)
    handle.remove()
    out = captured[-1]
    unit = out.shape[-1] // 2
    out[0, :, unit, unit].sum().backward()
    assert image.grad is not None
    reached = image.grad[0].abs().sum(0) > 0
    rows = torch.nonzero(reached.any(1)).flatten().tolist()
    cols = torch.nonzero(reached.any(0)).flatten().tolist()
    return [rows[0], rows[-1]], [cols[0], cols[-1]], unit


def _expected_support(field: ReceptiveField, unit: int) -> list[int]:
    start = -field.padding_px + unit * field.stride_px
    return [int(start), int(start + field.rf_px - 1)]


@pytest.mark.parametrize("name", ["wide", "deep", "shifted", "head"])
def test_tracer_agrees_with_gradient_support_on_toy(name: str) -> None:
    size = 40
    model = _positive_linear(TwoBranch())
    field = receptive_fields(model, size, in_chans=1)[name]
    rows, cols, unit = _gradient_support(model, name, size, 1)
    expected = _expected_support(field, unit)
    assert expected[0] >= 0 and expected[1] < size  # the field of the centre unit lies inside the image
    assert rows == expected and cols == expected


def test_tracer_agrees_with_gradient_support_through_tf_same_padding() -> None:
    # Conv2dSame (dynamic, stride 2) pads 1 before on odd sizes; stride-1 'same' becomes static padding.
    size = 41
    model = _positive_linear(
        nn.Sequential(
            timm.layers.create_conv2d(1, 2, 3, stride=2, padding="same"),
            timm.layers.create_conv2d(2, 2, 5, stride=2, padding="same"),
            timm.layers.create_conv2d(2, 2, 3, dilation=2, padding="same"),
        )
    )
    fields = receptive_fields(model, size, in_chans=1)
    assert fields["0"].padding_px == 1
    for name in ("0", "1", "2"):
        rows, cols, unit = _gradient_support(model, name, size, 1)
        expected = _expected_support(fields[name], unit)
        assert expected[0] >= 0 and expected[1] < size
        assert rows == expected and cols == expected, name


@pytest.fixture(scope="module")
def positive_resnet18() -> tuple[nn.Module, dict[str, ReceptiveField]]:
    model = _positive_linear(torchvision.models.resnet18(weights=None))
    return model, receptive_fields(model, 160)


@pytest.mark.parametrize("name", ["conv1", "maxpool", "layer1", "layer2.0.downsample", "layer2.0", "layer2"])
def test_tracer_agrees_with_gradient_support_on_resnet18(
    positive_resnet18: tuple[nn.Module, dict[str, ReceptiveField]], name: str
) -> None:
    size = 160
    model, fields = positive_resnet18
    rows, cols, unit = _gradient_support(model, name, size, 3)
    expected = _expected_support(fields[name], unit)
    assert expected[0] >= 0 and expected[1] < size
    assert rows == expected and cols == expected
