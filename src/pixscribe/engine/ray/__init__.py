"""The Ray executor (``--executor ray``): :mod:`.executor` runs a method's stage groups
(:mod:`.plan`: stages sharing a model share an actor) as actor pools (:mod:`.pool`, actors in
:mod:`.worker`), the loop between them (:mod:`.flow`) bounds the batches in flight, and
:mod:`.watch` names a lost node. Imported only when a run asks for Ray."""
