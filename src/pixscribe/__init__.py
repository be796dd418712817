"""pixscribe: images to accurate, detailed, grounded text at dataset scale."""

__version__ = "0.1.0"
