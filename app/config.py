"""Settings, read once from the environment (prefix ``CORTEXLENS_``)."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob an operator may turn; each field's description is its documentation."""

    model_config = SettingsConfigDict(env_prefix="CORTEXLENS_")

    default_model: str = Field("efficientnet_lite0", description="Model used when a request names none.")
    max_upload_bytes: int = Field(20_000_000, gt=0, description="Largest accepted upload, in bytes.")
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Largest accepted image, width × height; larger ones are refused as bombs."
    )
    cache_mb: int = Field(
        512,
        gt=0,
        description="Memory budget of the analysis store, in MB (least recently used first out); up to 1 GB of it is "
        "touched once at start-up (and an equal share by each further inference worker), so resident memory starts "
        "near where a full store takes it.",
    )
    torch_threads: int = Field(
        0, ge=0, description="Threads torch may use for one forward pass; 0 keeps torch's default."
    )
    fov_deg: float = Field(
        8.0, gt=0, description="Visual angle the model's input spans, in degrees (Brain-Score uses 8°)."
    )
    models_dir: Path = Field(PROJECT_ROOT / "models", description="Folder of model cards (*.toml).")
    weights_dir: Path = Field(
        PROJECT_ROOT / "weights", description="Folder searched for weight files of the torchvision models."
    )
    allow_untrained: bool = Field(
        False, description="Serve models whose weights are missing with random initial weights instead of refusing."
    )
    preload: bool = Field(True, description="Load the default model at start-up instead of on first use.")
    inference_workers: int = Field(
        0,
        ge=0,
        description="Analyses computed at once; more queue behind them. 0: one per torch thread. Alone, an "
        "analysis uses every thread; side by side, each uses one (more analyses per second on the same cores).",
    )
    max_queued_analyses: int = Field(
        16, ge=0, description="Analyses allowed to wait for a worker; beyond that the server answers 503."
    )
    analysis_timeout_s: float = Field(60.0, gt=0, description="Longest an analysis may wait and run before 503.")
    id_secret: str = Field(
        default_factory=lambda: secrets.token_hex(32),
        description="Key that makes analysis ids unguessable; random per process unless set.",
        repr=False,
    )
    shared_dir: Path | None = Field(
        None, description="Folder shared by worker processes for finished analyses; needed with several workers."
    )

    @field_validator("shared_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CORTEXLENS_SHARED_DIR= (empty) must not mean the current directory.
        return None if value == "" else value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` instead."""
    return Settings()
