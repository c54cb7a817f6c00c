"""One analysis: an image through a model, its predictions and per-layer statistics, renders made on demand."""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from app.engine import render
from app.engine.errors import UnknownAnalysis, UnknownChannel, UnknownLayer
from app.engine.imaging import prepare_image
from app.engine.models import ModelRegistry
from app.engine.stats import LayerStats, layer_stats
from app.engine.store import AnalysisStore

if TYPE_CHECKING:
    from app.engine.shared_store import SharedAnalyses

logger = logging.getLogger(__name__)
TOP_PREDICTIONS = 5


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class LayerResult:
    name: str
    label: str
    activation: torch.Tensor = field(repr=False)  # (C, H, W) float32
    stats: LayerStats = field(repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        channels, height, width = self.activation.shape
        return channels, height, width


@dataclass
class Analysis:
    """Everything computed for one (image, model) pair. Renders are added lazily and counted in ``nbytes``."""

    id: str
    model_id: str
    trained: bool
    image: ImageInfo
    view: np.ndarray = field(repr=False)  # the cropped RGB input as the network saw it, uint8 (H, W, 3)
    predictions: list[Prediction]
    layers: dict[str, LayerResult] = field(repr=False)
    timings_ms: dict[str, float]
    renders: dict[str, bytes] = field(default_factory=dict, repr=False)
    # Held while a render is added and while they are summed: one analysis's pictures are made on several threads at
    # once (a page of channel tiles), and summing a dict that another thread adds to raises.
    _renders_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        activations = sum(layer.activation.numel() * layer.activation.element_size() for layer in self.layers.values())
        with self._renders_lock:
            renders = sum(len(png) for png in self.renders.values())
        return activations + self.view.nbytes + renders + 4096

    def add_render(self, key: str, png: bytes) -> None:
        with self._renders_lock:
            self.renders[key] = png

    def layer(self, name: str) -> LayerResult:
        try:
            return self.layers[name]
        except KeyError:
            raise UnknownLayer(name, self.model_id) from None


class Analyser:
    """Computes analyses, keeps them in a bounded store and renders their pictures on demand.

    Ids are an HMAC of the image bytes and the model under a server-side secret: the same upload gets the same
    id (and is computed once), while nobody who has not seen the image can guess it. With ``shared``, finished
    analyses are also written to a folder that other worker processes read when an id is not in their own store.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        store: AnalysisStore[Analysis],
        *,
        secret: str,
        max_bytes: int,
        max_pixels: int,
        shared: SharedAnalyses | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.shared = shared
        self._secret = secret.encode()
        self._max_bytes = max_bytes
        self._max_pixels = max_pixels
        self._inflight: dict[str, Future[Analysis]] = {}
        self._rendering: dict[tuple[str, str], Future[bytes]] = {}
        self._lock = threading.Lock()

    def analysis_id(self, data: bytes, model_id: str) -> str:
        digest = hmac.new(self._secret, model_id.encode() + b"\0" + data, hashlib.sha256)
        return digest.hexdigest()[:32]

    def analyse(self, data: bytes, model_id: str) -> tuple[Analysis, bool]:
        """The analysis of ``data`` under ``model_id``, and whether it was computed now (False: from the store)."""
        self.registry.card(model_id)
        key = self.analysis_id(data, model_id)
        with self._lock:
            cached = self.store.get(key)
            if cached is not None:
                return cached, False
            pending = self._inflight.get(key)
            if pending is None:
                self._inflight[key] = Future()
        if pending is not None:
            # Someone is computing this very analysis; wait for theirs instead of doing it twice.
            return pending.result(), False
        future = self._inflight[key]
        try:
            analysis = self._load_shared(key)  # another worker process may have analysed this image already
            computed = analysis is None
            if analysis is None:
                analysis = self._compute(key, data, model_id)
                self._share(analysis)
        except BaseException as error:
            future.set_exception(error)
            raise
        else:
            self.store.put(analysis)
            future.set_result(analysis)
            return analysis, computed
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def get(self, analysis_id: str) -> Analysis:
        analysis = self.store.get(analysis_id) or self._load_shared(analysis_id)
        if analysis is None:
            raise UnknownAnalysis(analysis_id)
        return analysis

    def _load_shared(self, analysis_id: str) -> Analysis | None:
        analysis = self.shared.load(analysis_id) if self.shared is not None else None
        if analysis is not None:
            self.store.put(analysis)
        return analysis

    def _share(self, analysis: Analysis) -> None:
        if self.shared is None:
            return
        try:
            self.shared.save(analysis)
        except OSError:
            # This worker still answers; other workers cannot, so the log says why their GETs answer 404.
            logger.exception("analysis %s could not be written to the shared folder", analysis.id)

    def _compute(self, key: str, data: bytes, model_id: str) -> Analysis:
        started = time.perf_counter()
        model = self.registry.get(model_id)
        card = model.card
        prepared = prepare_image(data, card.preprocess, max_bytes=self._max_bytes, max_pixels=self._max_pixels)
        decoded = time.perf_counter()
        logits, captured = model.capture(prepared.tensor)
        forwarded = time.perf_counter()
        probabilities = torch.softmax(logits[0].float(), dim=0)
        top = torch.topk(probabilities, TOP_PREDICTIONS)
        predictions = [
            Prediction(model.labels[int(i)], int(i), float(p)) for p, i in zip(top.values, top.indices, strict=True)
        ]
        layers: dict[str, LayerResult] = {}
        for curated in card.layers:
            activation = captured[curated.name][0].float().contiguous()
            if activation.dim() == 1:
                # A fully connected layer: each unit is a channel with a 1×1 map.
                activation = activation.reshape(-1, 1, 1)
            layers[curated.name] = LayerResult(curated.name, curated.label, activation, layer_stats(activation))
        finished = time.perf_counter()
        return Analysis(
            id=key,
            model_id=model_id,
            trained=model.trained,
            image=ImageInfo(prepared.width, prepared.height, prepared.format),
            view=np.asarray(prepared.view, dtype=np.uint8),
            predictions=predictions,
            layers=layers,
            timings_ms={
                "decode": (decoded - started) * 1000,
                "forward": (forwarded - decoded) * 1000,
                "stats": (finished - forwarded) * 1000,
            },
        )

    # Renders: cached on the analysis and re-measured in the store so its byte budget holds.

    def _cached(self, analysis: Analysis, key: str, make: Callable[[], bytes]) -> bytes:
        """The render ``key`` of ``analysis``, made once: a request for a picture that another thread is making
        right now (see ``render_first_view``) waits for that one instead of making it again."""
        png = analysis.renders.get(key)
        if png is not None:
            return png
        slot = (analysis.id, key)
        with self._lock:
            png = analysis.renders.get(key)  # finished between the first look and the lock
            pending = self._rendering.get(slot)
            if png is None and pending is None:
                made = self._rendering[slot] = Future()
        if png is not None:
            return png
        if pending is not None:
            return pending.result()
        try:
            png = make()
            analysis.add_render(key, png)
            self.store.remeasure(analysis.id)
        except BaseException as error:
            made.set_exception(error)
            raise
        else:
            made.set_result(png)
            return png
        finally:
            with self._lock:
                self._rendering.pop(slot, None)

    def render_first_view(self, analysis: Analysis) -> None:
        """Make the pictures the analysis page shows first (the input and every layer's atlas), in page order.

        Started while the page itself is still on its way, so that most are ready when the browser asks.
        """
        self.input_png(analysis)
        for name in analysis.layers:
            self.atlas_png(analysis, name)

    def rendered(self, analysis_id: str, key: str) -> bytes | None:
        """The picture ``key`` (``input_key``, ``atlas_key``, ``channel_key``) of a stored analysis if it has been
        rendered already, else None. It never waits, renders or reads the shared folder, so the event loop may ask."""
        analysis = self.store.get(analysis_id)
        return None if analysis is None else analysis.renders.get(key)

    def input_png(self, analysis: Analysis) -> bytes:
        def make() -> bytes:
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(analysis.view).save(buffer, format="PNG", compress_level=1)
            return buffer.getvalue()

        return self._cached(analysis, input_key(), make)

    def atlas_png(self, analysis: Analysis, layer_name: str) -> bytes:
        layer = analysis.layer(layer_name)
        return self._cached(
            analysis, atlas_key(layer_name), lambda: render.atlas_png(layer.activation, layer.stats.top_channels)
        )

    def channel_png(self, analysis: Analysis, layer_name: str, channel: int) -> bytes:
        layer = analysis.layer(layer_name)
        check_channel(layer, channel)
        return self._cached(
            analysis, channel_key(layer_name, channel), lambda: render.channel_png(layer.activation[channel])
        )

    @staticmethod
    def activations_npy(analysis: Analysis, layer_name: str) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, analysis.layer(layer_name).activation.numpy(), allow_pickle=False)
        return buffer.getvalue()


def input_key() -> str:
    return "input"


def atlas_key(layer_name: str) -> str:
    return f"atlas:{layer_name}"


def channel_key(layer_name: str, channel: int) -> str:
    return f"channel:{layer_name}:{channel}"


def check_channel(layer: LayerResult, channel: int) -> None:
    channels = layer.shape[0]
    if not 0 <= channel < channels:
        raise UnknownChannel(channel, layer.name, channels)
