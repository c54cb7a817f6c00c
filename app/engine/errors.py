"""Errors the engine raises on purpose; each message is a sentence a user can act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: the request asked for something the engine cannot give."""


class UnknownModel(EngineError):
    def __init__(self, model_id: str) -> None:
        super().__init__(f"unknown model '{model_id}'; see GET /api/v1/models")


class UnknownLayer(EngineError):
    def __init__(self, layer: str, model_id: str) -> None:
        super().__init__(f"unknown layer '{layer}' for model '{model_id}'; see GET /api/v1/models/{model_id}")


class UnknownChannel(EngineError):
    def __init__(self, channel: int, layer: str, channels: int) -> None:
        super().__init__(f"layer '{layer}' has no channel {channel}; its channels are 0 to {channels - 1}")


class UnknownAnalysis(EngineError):
    def __init__(self, analysis_id: str) -> None:
        super().__init__(
            f"no analysis '{analysis_id}': it never existed or has left the cache; "
            "upload the image again with POST /api/v1/analyses"
        )


class WeightsMissing(EngineError):
    """The card's weights are not on this machine; the message says which file goes where."""


class ModelUnavailable(EngineError):
    """The model's weights exist but could not be loaded (for example a corrupt file)."""


class NotAnImage(EngineError):
    """The upload is not in any image format we can read."""


class UndecodableImage(EngineError):
    """The upload looks like an image but cannot be decoded (truncated, corrupt, empty)."""


class ImageTooLarge(EngineError):
    """The upload is larger than the configured byte or pixel limit."""


class Overloaded(EngineError):
    """Too many analyses are queued or the analysis ran out of time; the client should retry later."""


class UnknownExperiment(EngineError):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no experiment '{job_id}': it never existed or has been forgotten; "
            "start one with POST /api/v1/experiments/orientation-tuning"
        )


class InvalidParameter(EngineError):
    """A request parameter is well-formed but not usable (for example two analyses of different models)."""


class ExperimentNotReady(EngineError):
    """The experiment has no result (yet): it is queued or running, or it was cancelled or failed."""
