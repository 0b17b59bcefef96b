"""Input pipelines: single-datum sample generators and evaluation sets.

TensorFlow (tf.data, tfds) is imported lazily and only by the parts that use
it. Its start-up banners are silenced here, before any import of it:
`TF_ENABLE_ONEDNN_OPTS=0` also drops the "oneDNN custom operations are on"
line that TF prints before its log level applies; the pipeline runs no
TensorFlow matmul or convolution, so it changes no patch (tests pin them).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
