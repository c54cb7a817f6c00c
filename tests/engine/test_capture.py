import threading

import torch
from torch import nn

from app.engine.capture import capture


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
