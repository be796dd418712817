"""Image Textualization: its stages (``detail``, ``describe``, ``objects``, ``verify``,
``rewrite``), their options and prompts, and the offline noun-phrase extractor, in one place.

- ``method.py``: the factory, registered with its declaration (options, flags, roles);
- ``detail.py``, ``column.py``, ``objects.py``, ``verify.py``, ``rewrite.py``: the stages,
  each with its typed option declaration;
- ``nounphrases.py``: ``objects.extractor: nouns``.

Importing the package registers the method. ``textualize_method`` stays importable from
here (plugins build on it: tests/plugin_pkg).
"""

from .method import DESCRIBE_PROMPT, DescribeOptions, textualize, textualize_method

__all__ = ["DESCRIBE_PROMPT", "DescribeOptions", "textualize", "textualize_method"]
