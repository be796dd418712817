"""TIPCap: a light image captioner trained from text (Wang et al., arXiv 2403.19193), reconstructed.

A frozen CLIP embeds captions; a mapping network turns the text embedding, perturbed with
samples of a full-covariance Gaussian model of the image-text gap, into a prefix for a
causal LM (GPT-2 by default); an optional prompt (object tags) is fused into the prefix by
cross-attention. At inference the CLIP *image* embedding, moved back by the gap's mean,
takes the text embedding's place. No code was released with the paper; the choices made
where it is silent are written in ``docs/tipcap.md``.

- :mod:`.gap`: the gap estimators of the four data settings (numpy)
- :mod:`.noise`: training noise (full / isotropic / none), the inverse mapping, the KL regulariser
- :mod:`.nouns`: the offline noun extractor that makes training prompts
- :mod:`.model`: mapping network, prompt interaction module, the LM wrapper
- :mod:`.embed`, :mod:`.data`, :mod:`.prepare`: CLIP embeddings (cached), inputs, gap estimation
- :mod:`.train`, :mod:`.checkpoint`, :mod:`.cli`: ``pixscribe tipcap train``
- :mod:`.captioner`: :class:`~.captioner.TipCapCaptioner`, images (+ prompts) -> captions
- :mod:`.method`: ``--method tipcap``, registered with its declaration (options, flags, the
  ``tipcap`` command group); importing the package registers it (torch is imported only
  when a run or a command needs it)
"""

from .method import tipcap

__all__ = ["tipcap"]
