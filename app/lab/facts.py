"""The brain facts each experiment is shown beside, in the project's own words, each with its source.

Sources and wording follow ``/work/shared/science/ventral-stream.md``; ``refs`` are keys of the citation list in
``app/brain/areas.toml`` so pages can link them. Only facts marked verified or derived there appear here, and a
number appears only in a fact whose ``source`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Fact:
    area: str
    text: str
    source: str
    refs: tuple[str, ...]
    evidence: Literal["verified", "derived"] = "verified"


LGN_UNTUNED = Fact(
    area="LGN",
    text="LGN cells report local contrast of light and colour with centre–surround fields and are not tuned to the "
    "orientation of edges.",
    source="Hubel, Wiesel & LeVay 1977, Phil Trans R Soc Lond B 278:377",
    refs=("hubel1977",),
)
V1_ORIENTED = Fact(
    area="V1",
    text="V1 cells prefer oriented edges and gratings, and simple-cell receptive fields are well described by "
    "two-dimensional Gabor functions (measured in cat V1).",
    source="Jones & Palmer 1987, J Neurophysiol 58:1233",
    refs=("jones1987",),
)
V1_SPATIAL_FREQUENCY = Fact(
    area="V1",
    text="Most V1 cells respond best to gratings of 2–2.8 cycles per degree.",
    source="De Valois, Albrecht & Thorell 1982, Vision Res 22:545 (range read from their distributions)",
    refs=("devalois1982",),
    evidence="derived",
)
ALEXNET_FILTERS = Fact(
    area="V1",
    text="AlexNet's first layer learned filters tuned to frequency and orientation, and coloured blobs; they look "
    "much like the Gabor functions that describe V1 simple cells.",
    source="Krizhevsky, Sutskever & Hinton 2012, NeurIPS (Fig. 3); Jones & Palmer 1987, J Neurophysiol 58:1233",
    refs=("krizhevsky2012", "jones1987"),
)
IT_INVARIANCE = Fact(
    area="IT",
    text="Along the ventral stream, responses become more tolerant to an object's position and size while staying "
    "selective for its identity; IT carries object category and identity within 100–150 ms.",
    source="DiCarlo, Zoccolan & Rust 2012, Neuron 73:415",
    refs=("dicarlo2012",),
)
DEEP_LAYERS_PREDICT_IT = Fact(
    area="IT",
    text="The top layers of networks trained to recognise objects predict IT responses, and intermediate layers "
    "predict V4.",
    source="Yamins et al. 2014, PNAS 111:8619",
    refs=("yamins2014",),
)

ORIENTATION = (LGN_UNTUNED, V1_ORIENTED, V1_SPATIAL_FREQUENCY)
FIELDS = (V1_ORIENTED, ALEXNET_FILTERS)
SIMILARITY = (IT_INVARIANCE, DEEP_LAYERS_PREDICT_IT)
