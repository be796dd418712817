from .stage import Method, Stage, available_methods, build_method, register_method

__all__ = ["Method", "Stage", "available_methods", "build_method", "register_method"]
