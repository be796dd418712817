"""Built-in methods. Each module registers itself with ``register_method``."""

import importlib

for _name in ("recap", "experts"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as exc:  # a method whose module is not there yet
        if exc.name != f"{__name__}.{_name}":
            raise
