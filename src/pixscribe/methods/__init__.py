"""Built-in methods: every module or package here registers itself with
``pixscribe.api.register_method`` and is found by the registry without a list
(``api/registry.py``, ``BUILTIN_PACKAGES``); plugins use the ``pixscribe.methods`` entry-point
group. ``recap/`` is the layout each method grows into (docs/architecture.md)."""
