"""The paper's analysis figures of a finished run, one module per figure kind.

Each part is `analyze(context: common.Context) -> common.Section`, registered
in `PARTS` under the name `python -m big_vision_sid.analyze --what=` takes;
`DEFAULT_PARTS` is the paper's order.
"""

from big_vision_sid.analysis import cka
from big_vision_sid.analysis import confidence
from big_vision_sid.analysis import gallery
from big_vision_sid.analysis import neurons
from big_vision_sid.analysis import per_class
from big_vision_sid.analysis import tsne
from big_vision_sid.registry import Registry

PARTS = Registry("analysis")
PARTS.register("confidence")(confidence.analyze)
PARTS.register("tsne")(tsne.analyze)
PARTS.register("cka")(cka.analyze)
PARTS.register("neurons")(neurons.analyze)
PARTS.register("per_class")(per_class.analyze)
PARTS.register("gallery")(gallery.analyze)

DEFAULT_PARTS = ("confidence", "tsne", "cka", "neurons", "per_class", "gallery")
