"""tf.data (and on-device JAX) input pipelines: single-image patches and eval sets."""
