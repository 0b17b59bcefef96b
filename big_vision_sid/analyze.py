r"""The paper's analysis figures of a finished run, as one command (read-only).

  python -m big_vision_sid.analyze --workdir=workdirs/r56_r20 \
      [--what=confidence,tsne,cka,neurons,per_class,gallery] [--out=DIR] \
      [--step=N] [--num_patches=5000] [--compare_workdir=W2 | \
       --compare_teacher=FORMAT:MODEL:PATH] ...

Parts (`big_vision_sid/analysis/`, each runnable alone with `--what`):
  confidence  max softmax at the distillation temperature of teacher and
              student on training patches vs. test images (paper Fig. 3)
  tsne        joint t-SNE of the student's features on patches and test
              images, by predicted class, with thumbnails (Fig. 5)
  cka         linear CKA between every pair of layers of the student and the
              teacher / another run / a teacher file, minibatch and full
              batch (Fig. 15, 17)
  neurons     activation maximisation of class logits and stage channels,
              student and teacher side by side (Fig. 6, 12, 13)
  per_class   per-class accuracies, confusion matrices, accuracy vs. the
              teacher's class shares on the patches (App. B.13, Fig. 18-19)
  gallery     training patches captioned with the teacher's top class (Fig. 9)

Writes into `--out` (default `<workdir>/analysis`): the PNGs, `index.md`
(each figure with a one-line caption and the numbers behind it) and
`analysis.json` (the numbers). Parts run earlier on the same checkpoint stay
in both files, so parts can be added one at a time. The training patches are
the run's own first `--num_patches` samples (its input pipeline from step 0,
flip/crop included; `--mixed_patches` also applies its CutMix/MixUp draw of
each step); the test images are its `eval.dataset` (or `--dataset`). Nothing
in the workdir is written outside `--out` (but for the patch-selection scores
of a `input.selection` run whose cache in the workdir was deleted: they are
scored again and cached there, as the trainer does). Ends with `RESULT {json}`.
"""

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

from absl import logging
from etils import epath
import numpy as np

from big_vision_sid import analysis
from big_vision_sid import cli
from big_vision_sid import perf
from big_vision_sid import workdir as workdir_lib
from big_vision_sid.analysis import common

ANALYSIS_FILE = "analysis.json"
INDEX_FILE = "index.md"
DEFAULT_OUT = "analysis"


def parse_parts(what: str | Sequence[str]) -> list[str]:
  """The part names of a comma-separated `--what` (order kept, no repeats).

  Raises:
    KeyError: an unknown part (the error lists the known ones).
    ValueError: no part named.
  """
  names = what.split(",") if isinstance(what, str) else list(what)
  parts = list(dict.fromkeys(n.strip() for n in names if n.strip()))
  if not parts:
    raise ValueError(f"--what names no analysis; known: "
                     f"{', '.join(analysis.DEFAULT_PARTS)}.")
  for name in parts:
    analysis.PARTS.get(name)
  return parts


def _plain(value: Any) -> Any:
  """JSON-ready: numpy scalars as Python numbers, NaN/inf as None."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return _plain(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def _previous_sections(path: epath.Path, workdir: str, step: int) -> dict[str, Any]:
  """Sections of an earlier analysis.json of the same checkpoint, else {}."""
  if not path.exists():
    return {}
  try:
    previous = workdir_lib.read_json(path)
  except ValueError:
    logging.warning("Ignoring unreadable %s.", path)
    return {}
  if previous.get("workdir") != workdir or previous.get("step") != step:
    return {}
  return previous.get("sections", {})


def analyze_run(workdir: str, *, what: str | Sequence[str] | None = None,
                out: str | None = None, step: int | None = None,
                options: common.Options | None = None) -> dict[str, Any]:
  """Runs the analysis parts `what` on one checkpoint of the run in `workdir`.

  Args:
    workdir: the run's directory (only read).
    what: part names (comma-separated or a sequence); None for all.
    out: the output folder; None for `<workdir>/analysis`.
    step: the checkpoint; None for the latest.
    options: the counts and choices of the parts; None for the defaults.

  Returns:
    A summary: the output folder, the step, the parts run and every scalar
    number of their sections (`<part>.<name>`), with seconds per part.

  Raises:
    FileNotFoundError: no such workdir, config.json, checkpoint or data.
    ValueError / KeyError: a bad option, step, part name or dataset spec.
  """
  options = options or common.Options()
  parts = parse_parts(what or analysis.DEFAULT_PARTS)
  options.check()
  workdir_lib.load_config(workdir)  # A bad workdir fails before out is made.
  out_dir = workdir_lib.prepare(out or workdir_lib.as_path(workdir) / DEFAULT_OUT)
  run = workdir_lib.load_run(workdir, step)
  workdir_name = str(workdir_lib.as_path(workdir))
  context = common.Context(run, options, str(out_dir))
  sections = _previous_sections(out_dir / ANALYSIS_FILE, workdir_name, run.step)
  summary: dict[str, Any] = {"out": str(out_dir), "step": run.step,
                             "parts": parts}
  for name in parts:
    start = time.time()
    section = analysis.PARTS.get(name)(context)
    seconds = time.time() - start
    logging.info("Analysis '%s' done in %.1fs: %s", name, seconds,
                 ", ".join(f.file for f in section.figures))
    sections[name] = _plain({
        "title": section.title, "seconds": round(seconds, 1),
        "figures": [dataclasses.asdict(f) for f in section.figures],
        "numbers": section.numbers, "options": dataclasses.asdict(options)})
    summary[f"{name}.seconds"] = round(seconds, 1)
    for key, value in sections[name]["numbers"].items():
      if isinstance(value, (int, float)) or value is None:
        summary[f"{name}.{key}"] = value
  ordered = {name: sections[name] for name in
             [*analysis.DEFAULT_PARTS, *sorted(sections)] if name in sections}
  payload = {"workdir": workdir_name, "step": run.step, "sections": ordered}
  workdir_lib.write_json(out_dir / ANALYSIS_FILE, payload)
  workdir_lib.write_text(out_dir / INDEX_FILE, render_index(payload))
  return summary


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, list):
    return ", ".join(_format(v) for v in value)
  return "-" if value is None else str(value)


def render_index(payload: dict[str, Any]) -> str:
  """index.md: every section's figures, captions and numbers."""
  lines = [f"# Analysis of {payload['workdir']} (step {payload['step']})", "",
           "Written by `python -m big_vision_sid.analyze`; the numbers are also "
           f"in `{ANALYSIS_FILE}` (matrices only there).", ""]
  for name, section in payload["sections"].items():
    lines += [f"## {section['title']} (`--what={name}`, {section['seconds']}s)", ""]
    for figure in section["figures"]:
      lines += [f"![{figure['file']}]({figure['file']})", "", figure["caption"], ""]
    rows = [(key, value) for key, value in section["numbers"].items()
            if not (isinstance(value, list) and value
                    and isinstance(value[0], list))]
    lines += ["| number | value |", "| --- | --- |"]
    lines += [f"| {key} | {_format(value)} |" for key, value in rows]
    lines.append("")
  return "\n".join(lines)


def _define_flags() -> Callable[[Sequence[str]], None]:
  """Defines the command-line flags; returns `main`."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  defaults = common.Options()
  flags.DEFINE_string("workdir", None, "The trained run's directory.",
                      required=True)
  flags.DEFINE_string("what", ",".join(analysis.DEFAULT_PARTS),
                      "Comma-separated parts to run.")
  flags.DEFINE_string("out", None, "Output folder; default <workdir>/analysis.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_string("dataset", None, "Test images: an eval set spec; "
                      "default: the run's eval.dataset.")
  flags.DEFINE_integer("num_patches", defaults.num_patches,
                       "Training patches analysed (the run's first samples).")
  flags.DEFINE_integer("max_test_images", defaults.max_test_images,
                       "Use only the first N test images (0: all).")
  flags.DEFINE_bool("mixed_patches", defaults.mixed_patches,
                    "Mix the patches with the run's CutMix/MixUp as trained.")
  flags.DEFINE_integer("batch_size", defaults.batch_size,
                       "Forward-pass batch size.")
  flags.DEFINE_float("temperature", None, "Softmax temperature of the "
                     "confidence histograms; default: the run's distill.temperature.")
  flags.DEFINE_integer("seed", defaults.seed, "Seed of t-SNE, CKA minibatches, "
                       "thumbnails and neuron channels.")
  flags.DEFINE_string("compare_workdir", None, "CKA: compare the student with "
                      "this run's student instead of the teacher.")
  flags.DEFINE_string("compare_teacher", None, "CKA: compare with a teacher "
                      "file FORMAT:MODEL:PATH, e.g. akamaster_cifar_resnet:"
                      "cifar_resnet20:/path/resnet20-12fca82f.th.")
  flags.DEFINE_integer("cka_batch_size", defaults.cka_batch_size,
                       "CKA minibatch size (Nguyen et al. used 256).")
  flags.DEFINE_integer("cka_full_batch_max", defaults.cka_full_batch_max,
                       "Also compute full-batch CKA up to this many images.")
  flags.DEFINE_float("tsne_perplexity", defaults.tsne_perplexity,
                     "t-SNE perplexity.")
  flags.DEFINE_integer("tsne_thumbnails", defaults.tsne_thumbnails,
                       "Thumbnails placed on the t-SNE map.")
  flags.DEFINE_integer("neuron_steps", defaults.neuron_steps,
                       "Activation-maximisation steps.")
  flags.DEFINE_integer("neuron_classes", defaults.neuron_classes,
                       "Class logits visualised (the first N classes).")
  flags.DEFINE_integer("neuron_channels", defaults.neuron_channels,
                       "Random channels visualised per stage.")
  flags.DEFINE_integer("gallery_size", defaults.gallery_size,
                       "Patches in the gallery.")
  values = flags.FLAGS

  def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    perf.enable_compilation_cache()
    cli.setup_logging()
    options = common.Options(**{field.name: getattr(values, field.name)
                                for field in dataclasses.fields(common.Options)})
    cli.run_reporting_result(lambda: analyze_run(
        values.workdir, what=values.what, out=values.out, step=values.step,
        options=options))

  return main


if __name__ == "__main__":
  perf.apply_default_xla_flags()
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(_define_flags())
