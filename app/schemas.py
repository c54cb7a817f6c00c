"""What the API promises: the JSON shapes of every response."""

from __future__ import annotations

from pydantic import BaseModel, Field

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
