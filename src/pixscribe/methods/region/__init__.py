"""Region captioning (issue #12), in one place: the method, its stage and its building blocks
(regions in, visual prompts, tasks, output, evaluation); each module is usable on its own.

- :mod:`.method`: the factory, registered with its declaration (options, flags, roles, the
  ``eval-regions`` command); :mod:`.stage`: the ``region`` stage
- :mod:`.types`: :class:`Region` (mask, box or points; id; attribute or instruction)
- :mod:`.masks`: every mask format -> one bool array (COCO RLE, polygons, PNG, base64 gzip)
- :mod:`.parse`: regions from input rows (one row per region, or a ``regions`` list column)
- :mod:`.sam`: points (and boxes) -> masks through the SAM expert
- :mod:`.propose`: `--regions auto`: the experts propose regions
- :mod:`.geometry`, :mod:`.draw`: focal crop box, outlines, dimming, numbered marks
- :mod:`.boxtext`: box coordinates in each model family's convention
- :mod:`.frame`: which convention a model gets, from what the model is (config, hub id, a
  server's ``/v1/models`` root) or as given; never guessed from a served name
- :mod:`.tasks`: attribute / dense / global prompt templates, CompositionCap attribute families
- :mod:`.prompts`: the modes focal, overlay, som, box, crop -> requests; answers -> captions
- :mod:`.output`: the region output dict and its Arrow type
- :mod:`.evaluate`, :mod:`.eval_io`, :mod:`.eval_cli`: region-level metrics broken down by
  attribute and prompting mode, and their command

Importing the package registers the method.
"""

from .output import REGION_ARROW, REGIONS_ARROW, region_output, regions_column
from .parse import parse_region, region_ids, regions_from_columns
from .prompts import MODES, PromptOptions, RegionPrompt, build_prompts, read_answer
from .tasks import ATTRIBUTES, TASKS, attribute_key
from .types import Region, RegionError
from .method import region  # registers the method (after the building blocks it composes)

__all__ = [
    "ATTRIBUTES",
    "MODES",
    "REGIONS_ARROW",
    "REGION_ARROW",
    "TASKS",
    "PromptOptions",
    "Region",
    "RegionError",
    "RegionPrompt",
    "attribute_key",
    "build_prompts",
    "parse_region",
    "read_answer",
    "region_ids",
    "region_output",
    "regions_column",
    "region",
    "regions_from_columns",
]
