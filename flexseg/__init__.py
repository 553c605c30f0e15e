"""FLEX-Seg: domain-generalized semantic segmentation that learns from diffusion-generated images."""

__version__ = "0.1.0"
