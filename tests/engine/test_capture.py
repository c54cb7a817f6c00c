import threading

import torch
from torch import nn

from app.engine.capture import TracedCapture, capture


class Doubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Identity()
        self.second = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x) * 2)


def test_hooks_are_removed_after_each_capture():
    model = Doubler()
    capture(model, ["first", "second"], torch.ones(1, 1))
    assert not model.first._forward_hooks and not model.second._forward_hooks


def test_concurrent_captures_on_one_module_do_not_mix():
    model = Doubler()
    errors: list[str] = []

    def worker(value: float) -> None:
        for _ in range(200):
            _, captured = capture(model, ["first", "second"], torch.full((1, 1), value))
            if float(captured["first"]) != value or float(captured["second"]) != 2 * value:
                errors.append(f"{value}: {captured}")

    threads = [threading.Thread(target=worker, args=(float(v),)) for v in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_outputs_are_recorded_before_a_following_in_place_op():
    model = nn.Sequential(nn.Identity(), nn.ReLU(inplace=True))
    _, captured = capture(model, ["0"], torch.tensor([[-1.0, 2.0]]))
    assert captured["0"].tolist() == [[-1.0, 2.0]]


class ChoosesByValue(nn.Module):
    """Control flow on the input's values: a trace keeps only the branch its example (zeros) took."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = self.conv(x)
        return mapped if float(x.abs().sum()) == 0 else -mapped


def test_a_traced_capture_records_exactly_what_the_eager_one_does():
    torch.manual_seed(0)
    # AlexNet's layout in small: each conv is followed by an in-place ReLU that must not reach the recorded conv.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True), nn.Flatten()
    ).eval()
    layers = ["0", "2", "3"]
    traced = TracedCapture(model, layers, input_size=16)
    assert traced.graph is not None
    for _ in range(3):  # past the executor's profiling runs too
        batch = torch.randn(1, 3, 16, 16)
        output, recorded = traced(batch)
        expected_output, expected = capture(model, layers, batch)
        assert torch.equal(output, expected_output)
        assert recorded.keys() == expected.keys()
        assert all(torch.equal(recorded[name], expected[name]) for name in layers)
        assert (recorded["0"] < 0).any()  # the conv's own output, before its ReLU


def test_a_traced_capture_is_eager_at_another_size_and_for_a_model_it_cannot_follow():
    model = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    batch = torch.randn(1, 3, 12, 12)
    output, recorded = TracedCapture(model, ["0"], input_size=16)(batch)
    assert output.shape == (1, 2, 10, 10) and torch.equal(recorded["0"], output)
    branching = ChoosesByValue().eval()
    untraceable = TracedCapture(branching, ["conv"], input_size=8)
    assert untraceable.graph is None
    assert untraceable.copies == {"conv"}  # as the eager capture it falls back to copies
    batch = torch.randn(1, 3, 8, 8)
    assert torch.equal(untraceable(batch)[0], capture(branching, ["conv"], batch)[0])


def test_only_outputs_a_later_op_changes_in_place_or_views_need_copies():
    class Halves(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :2]

    # Conv "0" is overwritten by the in-place ReLU "1", whose own output nothing changes after it; "2" is only
    # read; "3" is a view into "2"'s output.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), Halves(), nn.Flatten()).eval()
    layers = ["0", "1", "2", "3"]
    traced = TracedCapture(model, layers, input_size=16)
    assert traced.copies == {"0", "3"}
    batch = torch.randn(1, 3, 16, 16)
    _, recorded = traced(batch)
    _, expected = capture(model, layers, batch)
    assert all(torch.equal(recorded[name], expected[name]) for name in layers)
    assert recorded["3"].untyped_storage().nbytes() == recorded["3"].numel() * 4
