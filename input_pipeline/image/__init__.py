"""Patch rendering: the paper's chain written once over TensorFlow or jax.

`renderer.make_renderer(backend, image, patch_size)` is the only entry point;
`ops` holds the two backends' array primitives.
"""
