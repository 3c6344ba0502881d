"""Toy world: procedural shape scenes, captions, a pixel-exact scorer and a small SD-format model.

Import submodules directly: ``render`` and ``score`` need only numpy; ``train`` needs torch/diffusers.
"""
