"""The lab of one server process: the experiment jobs, and the results worth computing only once.

Everything here is plain Python over the engine's :class:`~app.engine.models.ModelRegistry`; the web layer
holds one :class:`Lab` per app and calls it from worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from app.engine.errors import InvalidParameter, ModelUnavailable, UnknownLayer, WeightsMissing
from app.engine.models import LoadedModel, ModelRegistry
from app.lab import images, svg
from app.lab.fields import FieldMethod, LayerFields, early_layers, first_conv, measure_fields
from app.lab.gabor import R2_GOOD
from app.lab.gradcam import GradCam, default_layer, grad_cam
from app.lab.jobs import Job, JobRunner
from app.lab.recording import resolve_layers
from app.lab.tuning import OSI_SELECTIVE, OrientationTuning, TuningSpec, run_orientation_tuning

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OnceCache(Generic[K, V]):
    """Values computed once per key, even when several threads ask at the same moment; least recently used
    keys leave first beyond ``capacity``. A computation that raises is not cached."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[K, V] = OrderedDict()
        self._pending: dict[K, Future[V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            pending = self._pending.get(key)
            if pending is None:
                future: Future[V] = Future()
                self._pending[key] = future
        if pending is not None:
            return pending.result()
        try:
            value = compute()
        except BaseException as error:
            with self._lock:
                self._pending.pop(key, None)
            future.set_exception(error)
            raise
        with self._lock:
            # Stored and released under one lock, so nobody arriving now computes the value a second time.
            self._pending.pop(key, None)
            self._values[key] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
        future.set_result(value)
        return value

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class Kernels:
    """The first convolution's weights and their tile grid."""

    model_id: str
    layer: str
    shape: tuple[int, ...]
    png: bytes
    zoom: int


@dataclass(frozen=True)
class RenderedFields:
    """A layer's linear fields with their pictures."""

    fields: LayerFields
    fields_png: bytes
    fits_png: bytes
    r2_svg: str
    zoom: int


@dataclass(frozen=True)
class RenderedGradCam:
    cam: GradCam
    overlay_png: bytes


class Lab:
    """Experiment jobs (:class:`~app.lab.jobs.JobRunner`) and cached results for one registry."""

    def __init__(
        self, registry: ModelRegistry, *, fov_deg: float, max_jobs: int = 16, time_limit_s: float = 300.0
    ) -> None:
        self.registry = registry
        self.fov_deg = fov_deg
        self.jobs = JobRunner(workers=1, max_jobs=max_jobs, time_limit_s=time_limit_s)
        self._kernels: OnceCache[str, Kernels] = OnceCache(16)
        self._fields: OnceCache[tuple[str, str, str], RenderedFields] = OnceCache(32)
        self._early: OnceCache[str, list[str]] = OnceCache(16)
        self._gradcams: OnceCache[tuple[str, str, int | None], RenderedGradCam] = OnceCache(64)
        self._default_gradcam_layer: OnceCache[str, str] = OnceCache(16)

    # Orientation tuning ---------------------------------------------------------------------------------------

    def start_orientation_tuning(
        self, model_id: str, layers: Sequence[str] | None, spec: TuningSpec, params: dict[str, object]
    ) -> Job:
        """Queue an orientation-tuning experiment; unknown models and layers are refused before queueing."""
        card = self.registry.card(model_id)
        weights = self.registry.weights_status(model_id)
        if not weights.available and not self.registry.allow_untrained:
            raise WeightsMissing(weights.reason)
        if self.registry.load_error(model_id):
            raise ModelUnavailable(str(self.registry.load_error(model_id)))
        names = list(layers) if layers else [layer.name for layer in card.layers]
        resolve_layers(self.registry.skeleton(model_id), names, model_id)

        def work(progress: Callable[[float], None], cancelled: Callable[[], bool]) -> OrientationTuning:
            model = self.registry.get(model_id)
            return run_orientation_tuning(
                model, names, spec, fov_deg=self.fov_deg, progress=progress, cancelled=cancelled
            )

        return self.jobs.submit("orientation-tuning", params, work)

    # First-layer filters and linear receptive fields ----------------------------------------------------------

    def kernels(self, model_id: str) -> Kernels:
        """The first convolution's kernels as a tile grid, made once per model."""

        def compute() -> Kernels:
            model = self.registry.get(model_id)
            name, conv = first_conv(model.module)
            weight = conv.weight.detach().float().numpy()
            zoom = images.zoom_for(max(weight.shape[-2:]))
            tiles = weight if weight.shape[1] == 3 else weight.mean(axis=1)
            return Kernels(model_id, name, tuple(weight.shape), images.tiles_png(tiles, zoom=zoom), zoom)

        return self._kernels.get(model_id, compute)

    def early_layers(self, model_id: str) -> list[str]:
        """The model's early stages comparable with V1 simple cells (see :func:`app.lab.fields.early_layers`)."""
        return self._early.get(model_id, lambda: early_layers(self.registry.get(model_id)))

    def fields(self, model_id: str, layer: str, method: FieldMethod) -> RenderedFields:
        """A layer's linear fields and Gabor fits, computed on first request and kept."""

        def compute() -> RenderedFields:
            model = self.registry.get(model_id)
            resolve_layers(model.module, [layer], model_id)
            card_layer = model.card.layer(layer)
            measured = measure_fields(model, layer, method=method, label=card_layer.label if card_layer else layer)
            return _render_fields(measured)

        return self._fields.get((model_id, layer, method), compute)

    # Grad-CAM -------------------------------------------------------------------------------------------------

    def gradcam_layer(self, model: LoadedModel) -> str:
        """The layer Grad-CAM uses when none is named: the model's last convolutional stage."""
        model_id = model.card.id
        return self._default_gradcam_layer.get(
            model_id, lambda: default_layer(model.card, self.registry.output_shapes(model_id))
        )

    def gradcam(
        self, model_id: str, analysis_id: str, view: np.ndarray, layer: str | None, class_index: int | None
    ) -> RenderedGradCam:
        """Grad-CAM for an analysis's input, cached per (analysis, layer, class)."""
        model = self.registry.get(model_id)
        chosen = layer or self.gradcam_layer(model)
        if model.card.layer(chosen) is None:
            raise UnknownLayer(chosen, model_id)

        def compute() -> RenderedGradCam:
            try:
                cam = grad_cam(model, view, layer=chosen, class_index=class_index)
            except ValueError as error:
                raise InvalidParameter(str(error)) from None
            return RenderedGradCam(cam, images.heat_overlay_png(view, cam.upsampled))

        return self._gradcams.get((analysis_id, chosen, class_index), compute)

    def shutdown(self) -> None:
        """Cancel the experiments and stop their pool."""
        self.jobs.shutdown()


def _render_fields(measured: LayerFields) -> RenderedFields:
    fields = np.stack([channel.field for channel in measured.channels])
    zoom = images.zoom_for(measured.patch_px)
    profiles = np.stack([channel.profile for channel in measured.channels])
    fits = np.stack(
        [
            channel.fit.fitted if channel.fit is not None else np.zeros_like(channel.profile)
            for channel in measured.channels
        ]
    )
    r2 = [channel.fit.r2 for channel in measured.channels if channel.fit is not None]
    share = measured.share_well_fit()
    chart = svg.histogram(
        r2,
        title=f"How well a 2-D Gabor fits each field: {measured.label}",
        x_label="R² of the Gabor fit (fraction of the field's variance explained)",
        threshold=R2_GOOD,
        threshold_label=f"R² ≥ {R2_GOOD}: {share:.0%} of channels",
        note=f"{measured.method.replace('_', ' ')}; shuffled-pixel control: {measured.control_share():.0%} pass",
    )
    return RenderedFields(
        fields=measured,
        fields_png=images.tiles_png(fields, zoom=zoom),
        fits_png=images.pairs_png(profiles, fits, zoom=zoom),
        r2_svg=chart,
        zoom=zoom,
    )


def osi_chart(result: OrientationTuning) -> str:
    """The hierarchy summary: each layer's distribution of OSI, stem to head, with the selective share."""
    groups = [
        (result.labels.get(layer.name, layer.name), layer.osi[layer.responsive].tolist()) for layer in result.layers
    ]
    captions = [f"{layer.share_selective():.0%}" for layer in result.layers]
    return svg.box_plot(
        groups,
        title="Orientation selectivity by layer, stem to head",
        y_label="OSI (responsive channels)",
        threshold=OSI_SELECTIVE,
        threshold_label=f"OSI > {OSI_SELECTIVE}: orientation selective (share of responsive channels above each box)",
        captions=captions,
        note="In the brain, LGN cells are not tuned to orientation (Hubel, Wiesel & LeVay 1977) while V1 cells prefer "
        "oriented edges and gratings (Jones & Palmer 1987). Boxes: quartiles and median; whiskers: 5th–95th "
        "percentiles; dots: channels.",
    )


def tuning_chart(result: OrientationTuning, layer: str, count: int = 24) -> str:
    """Polar tuning curves of the layer's most selective responsive channels."""
    tuning = result.layer(layer)
    order = [int(i) for i in np.argsort(-np.nan_to_num(tuning.one_minus_cv, nan=-1.0)) if tuning.responsive[i]][:count]
    panels = [
        (
            f"ch {index}: {tuning.preferred_deg[index]:.0f}°, OSI {tuning.osi[index]:.2f}",
            list(result.spec.orientations_deg),
            tuning.curves[index].tolist(),
        )
        for index in order
    ]
    return svg.polar_grid(
        panels,
        title=f"Orientation tuning, {result.labels.get(layer, layer)}: the {len(panels)} most selective channels",
        note="Each panel scaled to its own peak; 0° = horizontal stripes, angles counter-clockwise.",
    )
