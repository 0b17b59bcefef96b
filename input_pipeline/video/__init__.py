"""The video modality: fake clips of one image, labelled videos to evaluate on.

A training source `video:<image spec>` (any `input.source` image: a path,
`skimage:NAME`, `noise:uniform_image`) makes fake clips of that image
(`clips.py`: the paper's App. B.1, a linear pan and zoom between two random
crops), rendered on the fly by the patch renderer with one affine map per
frame; `augment.py` draws the distillation-time view of each sample (4
consecutive frames, short-side scale, crop, flip, AugMix) and `samples.py`
is the sample path of train_data. `labeled.py` reads labelled videos
(`video:folder:ROOT`, `video:tfds:NAME:SPLIT`) as evaluation sets of 10
clips per video. Batches hold clips uint8 [b, T, P, P, 3]; the X3D networks
(big_vision_sid/models/x3d.py) take them as they are.
"""

PREFIX = "video:"
