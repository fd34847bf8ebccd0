"""Log-template mining shared by the offline and streaming log detectors: masks and Drain3.

Numbers, addresses, hex and timestamps are masked before mining, so ``conn 12 to 10.0.0.7``
and ``conn 9 to 10.0.0.8`` share one template; the masks run in order, times first, because
the later, looser patterns would cut a timestamp into numbers.
"""

from __future__ import annotations

import re
from typing import Final

from drain3 import TemplateMiner
from drain3.masking import MaskingInstruction
from drain3.template_miner_config import TemplateMinerConfig

MASKS: Final = (
    (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?", "TIME"),
    (r"\b[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d\b", "TIME"),
    (r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b", "IP"),
    (r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{8,}\b", "HEX"),
    (r"(?<![A-Za-z])[-+]?\d+(?:\.\d+)?(?![A-Za-z])", "NUM"),
)
SIMILARITY: Final = 0.5  # Drain's sim_th: the share of tokens two lines of one template share
# Written as Drain3's own masker writes them, so a line masked here and one masked by a
# masking miner give the same template text.
_COMPILED: Final = tuple((re.compile(pattern), f"<{name}>") for pattern, name in MASKS)


def mask(text: str) -> str:
    """`text` with its variable parts replaced by ``<TIME>``, ``<IP>``, ``<HEX>``, ``<NUM>``."""
    for pattern, placeholder in _COMPILED:
        text = pattern.sub(placeholder, text)
    return text


def template_miner(masking: bool = True, max_clusters: int | None = None) -> TemplateMiner:
    """A Drain3 miner with Vigil's masks. `masking=False` for text already passed through
    `mask`; `max_clusters` bounds its memory (least recently used templates are dropped)."""
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    if masking:
        config.masking_instructions = [MaskingInstruction(p, name) for p, name in MASKS]
    config.drain_sim_th = SIMILARITY
    config.drain_max_clusters = max_clusters
    return TemplateMiner(config=config)
