"""The tiny demo stand-in for Stable Diffusion 1.5 and the DGInStyle ControlNet.

``settings`` reads the ``generation.demo_generator`` config slice, ``generation.architecture``
builds the components, ``data`` reads the demo world and caches its VAE latents, ``train`` holds
the training loops; the command ``python -m generation.demo`` (``__main__``) ties them together.
"""
