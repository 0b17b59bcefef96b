"""Data-free compression of a pretrained clone: pruning and int8 quantisation.

`pruning`: magnitude masks, the TF-MOT polynomial sparsity schedule and a
masked optimiser wrapper. `quantization`: straight-through fake quantisation
of any flax model's conv/dense layers, calibration, post-training int8.
`big_vision_sid.export` writes the compressed models and measures their size.
"""
