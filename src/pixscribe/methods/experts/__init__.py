"""The experts method, in one place: ``method.py`` (the factory, its stage that runs the chosen
experts, registered with its declaration) and ``describe.py`` (``--profile lite``'s
description composed from the experts' outputs). The experts themselves are the shared
library :mod:`pixscribe.experts`. Importing the package registers the method.
"""

from .method import ExpertsStage, expert_names, experts_method

__all__ = ["ExpertsStage", "expert_names", "experts_method"]
