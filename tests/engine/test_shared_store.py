"""The folder of finished analyses that worker processes share: exact round trips, ids checked before any path is
built, no pickle, and a byte budget that removes the least recently used files first."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.api.analyses import analysis_public
from app.engine import shared_store
from app.engine.analysis import Analyser, Analysis, ImageInfo, LayerResult, Prediction
from app.engine.shared_store import SharedAnalyses
from app.engine.stats import layer_stats

BUDGET = 1_000_000_000


@pytest.fixture
def coffee(client, coffee_analysis) -> Analysis:
    """The real default model's analysis of a real photo."""
    analyser: Analyser = client.app.state.runtime.analyser
    return analyser.get(coffee_analysis["id"])


def small_analysis(analysis_id: str, channels: int = 4) -> Analysis:
    activation = torch.arange(channels * 8 * 8, dtype=torch.float32).reshape(channels, 8, 8) - 50
    return Analysis(
        id=analysis_id,
        model_id="tiny",
        trained=False,
        image=ImageInfo(8, 8, "PNG"),
        view=np.zeros((8, 8, 3), dtype=np.uint8),
        predictions=[Prediction("cup", 3, 0.5)],
        layers={"a.0": LayerResult("a.0", "A", activation, layer_stats(activation))},
        timings_ms={"decode": 1.0},
    )


def test_a_real_analysis_comes_back_identical(coffee: Analysis, tmp_path: Path) -> None:
    shared = SharedAnalyses(tmp_path, BUDGET)
    started = time.perf_counter()
    shared.save(coffee)
    saved = time.perf_counter()
    loaded = shared.load(coffee.id)
    finished = time.perf_counter()
    assert loaded is not None and loaded is not coffee
    assert [p.name for p in tmp_path.iterdir()] == [f"{coffee.id}.npz"]
    assert analysis_public(loaded).model_dump() == analysis_public(coffee).model_dump()
    assert loaded.view.dtype == np.uint8 and np.array_equal(loaded.view, coffee.view)
    assert (loaded.predictions, loaded.image, loaded.timings_ms) == (
        coffee.predictions,
        coffee.image,
        coffee.timings_ms,
    )
    assert list(loaded.layers) == list(coffee.layers)
    for name, layer in coffee.layers.items():
        again = loaded.layers[name]
        assert Analyser.activations_npy(loaded, name) == Analyser.activations_npy(coffee, name)
        for kind in ("channel_means", "channel_maxes"):
            before, after = getattr(layer.stats, kind), getattr(again.stats, kind)
            assert after.dtype == np.float32 and np.array_equal(after, before)
        assert again.stats.top_channels == layer.stats.top_channels
        assert (again.stats.mean, again.stats.max, again.stats.sparsity) == (
            layer.stats.mean,
            layer.stats.max,
            layer.stats.sparsity,
        )
    assert loaded.renders == {}  # renders are made again by whichever worker is asked
    # Generous bounds (a few MB through the page cache); they catch an accidental compression or copy loop.
    assert saved - started < 2 and finished - saved < 2


@pytest.mark.parametrize(
    "analysis_id",
    [
        "",
        "..",
        "../" + "0" * 29,
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "0" * 32 + "\n",
        "0" * 32 + ".npz",
        "0" * 16 + "/" + "0" * 15,
        "/etc/passwd",
        "０" * 32,  # fullwidth digits: \d would take them, [0-9] does not
    ],
)
def test_a_malformed_id_never_reaches_the_file_system(
    analysis_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = SharedAnalyses(tmp_path / "shared", BUDGET)

    def untouchable(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the file system was reached")

    for name in ("load", "savez"):
        monkeypatch.setattr(shared_store.np, name, untouchable)
    for name in ("replace", "utime", "scandir", "unlink"):
        monkeypatch.setattr(shared_store.os, name, untouchable)
    monkeypatch.setattr(shared_store.tempfile, "mkstemp", untouchable)
    monkeypatch.setattr(Path, "exists", untouchable)
    assert shared.load(analysis_id) is None
    with pytest.raises(ValueError, match="not an analysis id"):
        shared.save(small_analysis(analysis_id))


def test_the_budget_removes_the_least_recently_used_first(tmp_path: Path) -> None:
    first, second, third = ("1" * 32, "2" * 32, "3" * 32)
    probe = SharedAnalyses(tmp_path / "probe", BUDGET)
    probe.save(small_analysis(first))
    size = (tmp_path / "probe" / f"{first}.npz").stat().st_size
    shared = SharedAnalyses(tmp_path / "shared", 2 * size + size // 2)  # room for two files
    shared.save(small_analysis(first))
    shared.save(small_analysis(second))
    now = time.time()
    os.utime(shared.folder / f"{first}.npz", (now - 30, now - 30))
    os.utime(shared.folder / f"{second}.npz", (now - 20, now - 20))
    assert shared.load(first) is not None  # a load counts as a use: now the second is the least recently used
    shared.save(small_analysis(third))
    assert sorted(p.name for p in shared.folder.iterdir()) == [f"{first}.npz", f"{third}.npz"]
    assert shared.load(second) is None and shared.load(third) is not None


def test_the_newest_stays_even_alone_over_the_budget(tmp_path: Path) -> None:
    shared = SharedAnalyses(tmp_path, 1)
    shared.save(small_analysis("a" * 32))
    shared.save(small_analysis("b" * 32))
    assert [p.name for p in tmp_path.iterdir()] == ["b" * 32 + ".npz"]


def test_a_pickled_file_is_refused_without_running_it(tmp_path: Path) -> None:
    """Another process's file is data: an object array (which needs pickle to load) is refused, never executed."""
    ran: list[str] = []

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (ran.append, ("code ran",))

    shared = SharedAnalyses(tmp_path, BUDGET)
    analysis_id = "c" * 32
    with (tmp_path / f"{analysis_id}.npz").open("wb") as handle:
        np.savez(handle, meta=np.array([Payload()], dtype=object))
    (tmp_path / f"{'d' * 32}.npz").write_bytes(b"not an archive")
    assert shared.load(analysis_id) is None and shared.load("d" * 32) is None
    assert ran == []


def test_a_file_under_another_id_is_refused(tmp_path: Path) -> None:
    shared = SharedAnalyses(tmp_path, BUDGET)
    shared.save(small_analysis("e" * 32))
    os.replace(tmp_path / f"{'e' * 32}.npz", tmp_path / f"{'f' * 32}.npz")
    assert shared.load("f" * 32) is None


def test_temporary_files_left_by_a_dead_writer_are_removed(tmp_path: Path) -> None:
    shared = SharedAnalyses(tmp_path, BUDGET)
    stale = tmp_path / ".dead.tmp"
    fresh = tmp_path / ".writing.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 2 * shared_store.STALE_TEMPORARY_S
    os.utime(stale, (old, old))
    shared.save(small_analysis("9" * 32))
    assert not stale.exists() and fresh.exists()


def test_the_analyser_reads_what_another_analyser_wrote(coffee: Analysis, client, tmp_path: Path) -> None:
    """Two analysers (two worker processes) on one folder: the second answers for an id it never computed."""
    from app.engine.store import AnalysisStore

    registry = client.app.state.runtime.registry
    shared = SharedAnalyses(tmp_path, BUDGET)

    def worker() -> Analyser:
        store = AnalysisStore[Analysis](BUDGET)
        return Analyser(registry, store, secret="s", max_bytes=10**7, max_pixels=10**8, shared=shared)

    shared.save(coffee)
    other = worker()
    assert other.get(coffee.id).id == coffee.id
    assert other.store.get(coffee.id) is not None  # kept in its own memory from then on
