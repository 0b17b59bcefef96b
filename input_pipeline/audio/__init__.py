"""The audio modality: clips of one recording, labelled clips, the Mel front end.

Every audio source is an `input.source` starting with `audio:` (see
`samples.py`): one recording whose augmented clips the student learns from
(`recording.py`, `clips.py`, `augment.py`), or labelled clips for supervised
training and evaluation (`labeled.py`). Batches hold waveforms, int16
[b, SEGMENT_SAMPLES, 1]; the networks compute their own log-Mel spectrogram
(`frontend.py`) as their first layer, inside the jitted step.

The pipeline is 16 kHz mono throughout (SpeechCommands' format, and the rate
the Mel filterbank is built for): a file at another rate or with several
channels is refused with one line saying how to convert it. numpy and
soundfile only (and jax for the front end); TensorFlow only for tfds.
"""

SAMPLE_RATE = 16_000
# What a network sees: a 1-s crop in training, 1-s segments in evaluation.
SEGMENT_SAMPLES = SAMPLE_RATE
PREFIX = "audio:"
