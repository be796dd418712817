"""Built-in methods: every module here registers itself with ``register_method`` and is found
by the engine without a list (``engine/stage.py``); plugins use the ``pixscribe.methods``
entry-point group."""
