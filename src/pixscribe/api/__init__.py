"""What a method may import: stages and methods, the context a method is built in, the model
pool's interface, typed option declarations, the registry and the user-error family.

Nothing here imports the engine or a method (tests/project/test_imports.py checks it); the engine
implements these interfaces (``engine/context.py``, ``engine/models.py``) and runs what they
describe. See docs/architecture.md.
"""

from ..errors import (
    BackendUnavailable,
    ConfigError,
    ConfigMismatch,
    MethodError,
    MissingDependency,
    PixscribeError,
)
from .context import MethodContext
from .models import LOCAL_BACKENDS, ModelPool, ModelSpec, resolve_spec
from .options import COMMON_FLAGS, OptionInfo, OptionValues, StageOptions, check_option, fingerprinted, option
from .registry import (
    ENTRY_POINT_GROUP,
    Flag,
    MethodFactory,
    MethodSpec,
    ModelRole,
    available_methods,
    method_factory,
    method_spec,
    method_specs,
    register_method,
)
from .stage import Method, Stage, stage_fingerprints, stage_reads

__all__ = [
    "BackendUnavailable", "COMMON_FLAGS", "ConfigError", "ConfigMismatch", "ENTRY_POINT_GROUP", "Flag",
    "LOCAL_BACKENDS", "Method", "MethodContext", "MethodError", "MethodFactory", "MethodSpec", "MissingDependency",
    "ModelPool", "ModelRole", "ModelSpec", "OptionInfo", "OptionValues", "PixscribeError", "Stage", "StageOptions",
    "available_methods", "check_option", "fingerprinted", "method_factory", "method_spec", "method_specs", "option",
    "register_method", "resolve_spec", "stage_fingerprints", "stage_reads",
]
