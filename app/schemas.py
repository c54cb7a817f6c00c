"""What the API promises: the JSON shapes of every response."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.brain import IllustrativeAlignment, PublishedMapping


class ErrorPublic(BaseModel):
    detail: str = Field(description="A sentence saying what went wrong and what to do about it.")


class ModelPublic(BaseModel):
    id: str
    name: str
    family: str
    description: str
    default: bool
    weights_available: bool
    weights_note: str = Field(description="Where the weights come from, or what to do to install them.")
    analysable: bool = Field(description="False when analysing with this model would be refused (409).")
    loaded: bool
    load_error: str | None = None
    input_size: int = Field(description="Side of the square input in pixels.")
    num_params: int


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class LayerPublic(BaseModel):
    name: str = Field(description="Dotted module path, as in the network's code (`blocks.2`, `layer3.0`).")
    label: str | None = Field(None, description="Short human label; only curated layers have one.")
    curated: bool = Field(description="Curated layers are captured in every analysis.")
    shape: list[int] = Field(description="Output shape without the batch dimension, usually [C, H, W].")
    rf_px: int | None = Field(
        None, description="Theoretical receptive field side in input pixels (may exceed the image); None if not run."
    )
    stride_px: int | None = Field(None, description="Input pixels between neighbouring units (the jump).")
    rf_deg: float | None = Field(
        None,
        description="Receptive field in degrees of visual angle at the configured field of view, clipped at the image.",
    )
    covers_input: bool | None = Field(None, description="True when the field spans the whole input image.")


class ModelDetailPublic(ModelPublic):
    fov_deg: float = Field(description="Visual angle the input spans; Brain-Score's convention is 8° for 224 px.")
    layers: list[LayerPublic]


class AlignmentPublic(BaseModel):
    model: str
    fov_deg: float
    published: list[PublishedMapping]
    published_note: str | None = Field(None, description="Says so when no study published a map for this network.")
    illustrative: IllustrativeAlignment


class ImagePublic(BaseModel):
    width: int
    height: int
    format: str


class PredictionPublic(BaseModel):
    label: str
    index: int
    probability: float


class StatsPublic(BaseModel):
    mean: float
    max: float
    sparsity: float = Field(description="Share of values ≤ 0 (after ReLU: units that are silent).")


class ChannelPublic(BaseModel):
    index: int
    mean: float


class AtlasGridPublic(BaseModel):
    columns: int
    rows: int
    channels: list[int] = Field(description="Channel index of each tile, row by row.")


class LayerAnalysisPublic(BaseModel):
    name: str
    label: str
    shape: list[int]
    stats: StatsPublic
    top_channels: list[ChannelPublic]
    atlas_url: str
    atlas: AtlasGridPublic
    activations_url: str
    channels_url: str


class AnalysisPublic(BaseModel):
    id: str
    model: str
    trained: bool = Field(description="False when the model ran with random weights (no weights installed).")
    image: ImagePublic
    input_url: str = Field(description="The image as the network saw it, after resize and crop.")
    predictions: list[PredictionPublic]
    layers: list[LayerAnalysisPublic]
    timings_ms: dict[str, float]


class ChannelDetailPublic(BaseModel):
    index: int
    mean: float
    max: float
    rank: int = Field(description="1 for the layer's most active channel.")
    url: str


class ChannelsPublic(BaseModel):
    data: list[ChannelDetailPublic]
    count: int
    total: int
    offset: int


class CachePublic(BaseModel):
    analyses: int
    bytes: int
    budget_bytes: int


class QueuePublic(BaseModel):
    admitted: int = Field(description="Analyses running or waiting now.")
    capacity: int = Field(description="Beyond this many, new analyses get 503.")


class ServerPublic(BaseModel):
    cache: CachePublic
    queue: QueuePublic
    loaded_models: list[str]


class HealthPublic(BaseModel):
    status: str


class ReadyPublic(BaseModel):
    status: str
    default_model: str
    detail: str | None = None


# Lab: experiments run on the network. Request and response shapes of app/api/lab.py.

MAX_TUNING_STIMULI = 1200


class LabFactPublic(BaseModel):
    area: str = Field(description="Brain area the fact is about (LGN, V1, V2, V4, IT).")
    text: str
    source: str = Field(description="Where the fact (and any number in it) comes from.")
    refs: list[str] = Field(description="Keys of the citation list served with the brain facts.")
    evidence: Literal["verified", "derived"] = Field(
        description="`verified`: read in the source; `derived`: computed from the source's data."
    )


class OrientationTuningRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model id; the server's default when omitted.")
    layers: list[str] | None = Field(
        None,
        max_length=32,
        description="Layers to record (dotted names, see GET /api/v1/models/{id}); all curated layers, stem to "
        "head, when omitted. Each channel of each layer is measured; one forward pass per batch of stimuli.",
    )
    orientation_step_deg: float = Field(
        15.0, ge=2.5, le=45.0, description="Orientations from 0° in this step up to 180°; must divide 90°."
    )
    spatial_frequencies: list[float] = Field(
        [8.0, 16.0, 32.0, 56.0],
        min_length=1,
        max_length=8,
        description="Spatial frequencies to test, in `frequency_unit`; each channel's curve is taken at its best.",
    )
    frequency_unit: Literal["cycles_per_image", "cycles_per_degree"] = Field(
        "cycles_per_image", description="Unit of `spatial_frequencies`; degrees use the server's field of view."
    )
    phases: int = Field(4, ge=1, le=8, description="Evenly spaced phases averaged over (phase invariance).")
    stimulus: Literal["grating", "gabor"] = Field(
        "grating", description="Full-field sinusoidal grating, or a Gabor patch (grating in a Gaussian window)."
    )
    response: Literal["centre", "mean"] = Field(
        "centre", description="Record the centre unit of each channel, or the mean over the channel's whole map."
    )
    contrast: float = Field(1.0, gt=0.0, le=1.0, description="Michelson contrast of the stimuli.")
    envelope_sigma_deg: float | None = Field(
        None, gt=0.0, le=8.0, description="Gabor patches only: standard deviation of the window, in degrees."
    )

    @model_validator(mode="after")
    def _check(self) -> OrientationTuningRequest:
        steps = 90.0 / self.orientation_step_deg
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError("orientation_step_deg must divide 90 (for example 15, 10, 7.5 or 5)")
        if any(frequency <= 0 for frequency in self.spatial_frequencies):
            raise ValueError("spatial frequencies must be positive")
        count = round(180.0 / self.orientation_step_deg) * len(self.spatial_frequencies) * self.phases
        if count > MAX_TUNING_STIMULI:
            raise ValueError(
                f"{count} stimuli asked for; at most {MAX_TUNING_STIMULI}: use fewer orientations, frequencies "
                "or phases"
            )
        return self


class TuningStimuliPublic(BaseModel):
    count: int = Field(description="Images shown, the blank mid-grey screen included.")
    orientations_deg: list[float]
    cycles_per_image: list[float]
    cycles_per_degree: list[float]
    phases: int
    stimulus: str
    response: str
    contrast: float
    envelope_sigma_px: float | None
    image_px: int
    fov_deg: float = Field(description="Visual angle the image spans (the server's `fov_deg` setting).")


class TuningLayerPublic(BaseModel):
    name: str
    label: str
    channels: int
    responsive: int = Field(description="Channels with an evoked response (see `definitions.responsive`).")
    selective_share: float = Field(description="Share of responsive channels with OSI above the threshold.")
    median_osi: float | None
    median_one_minus_cv: float | None
    preferred_orientation_counts: list[int] = Field(
        description="Responsive channels preferring each orientation of `stimuli.orientations_deg`."
    )
    median_preferred_cycles_per_degree: float | None
    channels_url: str
    curves_url: str = Field(description="SVG: polar tuning curves of the layer's most selective channels.")


class OrientationTuningPublic(BaseModel):
    model: str
    trained: bool
    stimuli: TuningStimuliPublic
    selective_threshold: float
    definitions: dict[str, str]
    layers: list[TuningLayerPublic]
    osi_plot_url: str = Field(description="SVG: the distribution of OSI in each layer, stem to head.")
    brain: list[LabFactPublic]


class ExperimentPublic(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "done", "cancelled", "failed"]
    progress: float = Field(description="Fraction of the stimulus batches done, 0 to 1.")
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(None, description="Why the experiment failed.")
    params: dict[str, Any] = Field(description="The request, with defaults filled in.")
    url: str
    result: OrientationTuningPublic | None = Field(None, description="Present once `status` is `done`.")


class TuningChannelPublic(BaseModel):
    index: int
    responsive: bool
    preferred_deg: float | None
    osi: float | None
    one_minus_cv: float | None
    preferred_cycles_per_image: float
    preferred_cycles_per_degree: float
    curve: list[float] = Field(description="Response at each orientation of `orientations_deg`.")


class TuningChannelsPublic(BaseModel):
    experiment: str
    layer: str
    label: str
    orientations_deg: list[float]
    data: list[TuningChannelPublic]
    count: int


class KernelsPublic(BaseModel):
    layer: str = Field(description="The first convolution, the one that sees the pixels.")
    shape: list[int] = Field(description="[out channels, in channels, height, width].")
    image_url: str = Field(description="PNG: one tile per kernel, RGB, each scaled symmetrically around 0.")
    zoom: int = Field(description="Each weight is drawn as a zoom × zoom square.")
    columns: int
    rows: int


class GaborFitPublic(BaseModel):
    r2: float = Field(description="Fraction of the profile's variance explained by the fit.")
    orientation_deg: float = Field(description="Stripe orientation, counter-clockwise from horizontal.")
    cycles_per_pixel: float
    cycles_per_degree: float
    sigma_across_px: float
    sigma_along_px: float
    centre_x_px: float = Field(description="Relative to the patch centre, rightwards.")
    centre_y_px: float = Field(description="Relative to the patch centre, upwards.")
    phase_deg: float


class FieldChannelPublic(BaseModel):
    index: int
    well_fit: bool
    colour: list[float] = Field(description="The field's dominant colour direction (R, G, B), unit length.")
    fit: GaborFitPublic | None = Field(None, description="Absent for a silent channel.")
    shuffled_r2: float | None = Field(None, description="R² of the same fit on the profile's shuffled pixels.")


class LinearFieldsPublic(BaseModel):
    layer: str
    label: str
    method: str
    rf_px: int = Field(description="Extent of the measured field, in input pixels.")
    patch_px: int
    samples: int = Field(description="Noise images the estimate averages over.")
    channels: int
    share_well_fit: float = Field(description="Share of non-silent channels whose fit reaches the R² threshold.")
    control_share: float = Field(description="The same share for pixel-shuffled profiles (chance level).")
    median_r2: float | None
    fields_url: str = Field(description="PNG: each channel's RGB field, scaled symmetrically around 0.")
    fits_url: str = Field(description="PNG: pairs of (profile, fitted Gabor), same order as the fields.")
    r2_plot_url: str = Field(description="SVG: histogram of R² with the threshold.")
    columns: int
    rows: int
    zoom: int
    data: list[FieldChannelPublic]


class FirstLayerFiltersPublic(BaseModel):
    model: str
    trained: bool
    kernels: KernelsPublic
    method: Literal["gradient", "reverse_correlation"]
    r2_threshold: float
    definitions: dict[str, str]
    layers: list[LinearFieldsPublic]
    brain: list[LabFactPublic]


class GradCamPublic(BaseModel):
    analysis: str
    model: str
    layer: str
    layer_label: str
    class_index: int
    class_label: str
    probability: float
    map_shape: list[int] = Field(description="[height, width] of the map at the layer's resolution.")
    heatmap: list[list[float]] = Field(description="Grad-CAM at the layer's resolution (≥ 0, not normalised).")
    centre_of_mass_px: list[float] = Field(
        description="[row, column] in input pixels of the centre of the map's hot spot (above half its peak)."
    )
    overlay_url: str = Field(description="PNG: the input as the network saw it with the map laid over it.")
    npy_url: str = Field(description="The map upsampled to the input size, float32 H×W (NumPy .npy).")
    method: str


class ComparedAnalysisPublic(BaseModel):
    id: str
    url: str
    input_url: str
    top_prediction: PredictionPublic
    atlas_urls: dict[str, str] = Field(description="Layer name → atlas PNG of this image.")


class LayerSimilarityPublic(BaseModel):
    name: str
    label: str
    cosine: float
    pearson: float | None


class ComparisonPublic(BaseModel):
    id: str
    url: str
    model: str
    a: ComparedAnalysisPublic
    b: ComparedAnalysisPublic
    layers: list[LayerSimilarityPublic]
    early_cosine: float = Field(description="Mean cosine over the first third of the layers.")
    late_cosine: float = Field(description="Mean cosine over the last third of the layers.")
    plot_url: str = Field(description="SVG: both measures against depth.")
    definitions: dict[str, str]
    explanation: str
    brain: list[LabFactPublic]
