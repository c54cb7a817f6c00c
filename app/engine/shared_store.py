"""Finished analyses in a folder that several worker processes share, so an id works on whichever one answers.

One file per analysis, ``<id>.npz``: the arrays (the input as seen, each layer's activations, channel means and
maxes) and, as the array ``meta``, a UTF-8 JSON document with everything else. One file, so that one
``os.replace`` publishes an analysis whole and one unlink removes it whole. It is read with ``allow_pickle=False``:
a file written by another process holds data, never code. Renders are not stored; each worker makes its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.engine.analysis import Analysis, ImageInfo, LayerResult, Prediction
from app.engine.stats import LayerStats

logger = logging.getLogger(__name__)

FORMAT = 1
SUFFIX = ".npz"
# Analysis ids are the first 32 hex digits of an HMAC; nothing else may become a file name.
ANALYSIS_ID = re.compile(r"[0-9a-f]{32}")
# A writer that died between creating its temporary file and renaming it leaves the file behind.
STALE_TEMPORARY_S = 3600.0
# Of the folder's file system, at most this share is used (Docker gives /dev/shm only 64 MB by default).
FILE_SYSTEM_SHARE = 0.75


class SharedAnalyses:
    """``save`` an analysis, ``load`` it in any process by id; the least recently used files go past the budget."""

    def __init__(self, folder: Path, budget_bytes: int) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = folder
        room = int(shutil.disk_usage(folder).total * FILE_SYSTEM_SHARE)
        if room < budget_bytes:
            logger.warning(
                "the shared analysis folder %s can hold %d MB, less than the %d MB budget; using %d MB "
                "(give it a larger file system, e.g. docker run --shm-size, or point CORTEXLENS_SHARED_DIR elsewhere)",
                folder,
                room // 1_000_000,
                budget_bytes // 1_000_000,
                room // 1_000_000,
            )
        self.budget_bytes = min(budget_bytes, room)

    def save(self, analysis: Analysis) -> None:
        """Publish ``analysis`` atomically (readers see the whole file or none), then trim to the budget."""
        path = self._path(analysis.id)
        if path is None:
            raise ValueError(f"not an analysis id: {analysis.id!r}")
        if path.exists():  # another worker analysed the same image and model: the same content
            _touch(path)
            return
        arrays = _arrays(analysis)
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{analysis.id}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                # The stubs fear a key named allow_pickle among the arrays; these are plain numbers, never pickled.
                np.savez(handle, **arrays)  # type: ignore[arg-type]
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._evict(keep=path)

    def load(self, analysis_id: str) -> Analysis | None:
        """The analysis saved under ``analysis_id``, or None when there is none (or it cannot be read)."""
        path = self._path(analysis_id)
        if path is None:
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                analysis = _analysis(analysis_id, {name: archive[name] for name in archive.files})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
            logger.warning("ignoring the unreadable shared analysis %s: %s", path.name, error)
            return None
        _touch(path)
        return analysis

    def _path(self, analysis_id: str) -> Path | None:
        if not isinstance(analysis_id, str) or ANALYSIS_ID.fullmatch(analysis_id) is None:
            return None
        return self.folder / f"{analysis_id}{SUFFIX}"

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used files until the rest fit the budget; ``keep`` (just saved) stays.

        Every worker runs this after its own saves, so two may race: a file already gone is simply skipped."""
        files: list[tuple[float, int, Path]] = []
        now = time.time()
        with os.scandir(self.folder) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    status = entry.stat(follow_symlinks=False)
                    if entry.name.endswith(".tmp") and now - status.st_mtime > STALE_TEMPORARY_S:
                        os.unlink(entry.path)
                    elif entry.name.endswith(SUFFIX) and ANALYSIS_ID.fullmatch(entry.name[: -len(SUFFIX)]):
                        files.append((status.st_mtime, status.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.budget_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _arrays(analysis: Analysis) -> dict[str, np.ndarray]:
    meta = {
        "format": FORMAT,
        "id": analysis.id,
        "model_id": analysis.model_id,
        "trained": analysis.trained,
        "image": {"width": analysis.image.width, "height": analysis.image.height, "format": analysis.image.format},
        "predictions": [
            {"label": p.label, "index": p.index, "probability": p.probability} for p in analysis.predictions
        ],
        "layers": [
            {
                "name": layer.name,
                "label": layer.label,
                "mean": layer.stats.mean,
                "max": layer.stats.max,
                "sparsity": layer.stats.sparsity,
                "top_channels": layer.stats.top_channels,
            }
            for layer in analysis.layers.values()
        ],
        "timings_ms": analysis.timings_ms,
    }
    # Arrays are named by position, so no layer name ever becomes a name inside the archive.
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), "view": analysis.view}
    for i, layer in enumerate(analysis.layers.values()):
        arrays[f"activation_{i}"] = layer.activation.numpy()
        arrays[f"channel_means_{i}"] = layer.stats.channel_means
        arrays[f"channel_maxes_{i}"] = layer.stats.channel_maxes
    return arrays


def _analysis(analysis_id: str, arrays: dict[str, np.ndarray]) -> Analysis:
    meta: dict[str, Any] = json.loads(_expect(arrays["meta"], np.uint8, 1).tobytes())
    if meta.get("format") != FORMAT or meta.get("id") != analysis_id:
        raise ValueError(f"format {meta.get('format')!r} or id {meta.get('id')!r} is not what was asked for")
    layers: dict[str, LayerResult] = {}
    for i, layer in enumerate(meta["layers"]):
        activation = torch.from_numpy(_expect(arrays[f"activation_{i}"], np.float32, 3))
        channels = activation.shape[0]
        stats = LayerStats(
            mean=float(layer["mean"]),
            max=float(layer["max"]),
            sparsity=float(layer["sparsity"]),
            channel_means=_expect(arrays[f"channel_means_{i}"], np.float32, 1, channels),
            channel_maxes=_expect(arrays[f"channel_maxes_{i}"], np.float32, 1, channels),
            top_channels=[int(c) for c in layer["top_channels"]],
        )
        if not all(0 <= c < channels for c in stats.top_channels):
            raise ValueError(f"layer {layer['name']!r} names a channel outside 0..{channels - 1}")
        layers[str(layer["name"])] = LayerResult(str(layer["name"]), str(layer["label"]), activation, stats)
    image = meta["image"]
    return Analysis(
        id=analysis_id,
        model_id=str(meta["model_id"]),
        trained=bool(meta["trained"]),
        image=ImageInfo(int(image["width"]), int(image["height"]), str(image["format"])),
        view=_expect(arrays["view"], np.uint8, 3),
        predictions=[
            Prediction(str(p["label"]), int(p["index"]), float(p["probability"])) for p in meta["predictions"]
        ],
        layers=layers,
        timings_ms={str(name): float(ms) for name, ms in meta["timings_ms"].items()},
    )


def _expect(array: np.ndarray, dtype: type[np.generic], ndim: int, length: int | None = None) -> np.ndarray:
    if array.dtype != dtype or array.ndim != ndim or (length is not None and array.shape[0] != length):
        raise ValueError(f"an array is {array.dtype} {array.shape}, expected {np.dtype(dtype)} with {ndim} dimensions")
    return np.ascontiguousarray(array)
