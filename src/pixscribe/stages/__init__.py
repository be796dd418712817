"""Stages that methods compose: model requests, experts, ..."""

from .generate import GenerateStage, image_request, quote, sampling_of, text_of

__all__ = ["GenerateStage", "image_request", "quote", "sampling_of", "text_of"]
