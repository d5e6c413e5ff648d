"""View-by-view evaluation (``viewrt infer``), an application of the runtime: add a scene's
views one at a time, render its targets after each, and write images, metrics and latencies
per step. Torch-free: it drives any object with the renderer interface (add_view, render,
reset, info, last_timings), made by a factory ``frame -> renderer`` that the caller supplies.

Output of one scene (``out_dir``)::

    view_000/images/target_{k}_pred.png, target_{k}_gt.png   # k: position in the targets
    view_000/metrics.json    # PSNR/SSIM per target and mean, latency by component,
    view_001/...             # cache views/bytes, peak RSS
    summary.csv, summary.json, steps.png, contact_sheet.png

With a list file each scene goes to ``OUT/<scene_name>/`` and ``OUT/summary.{csv,json}``
and ``OUT/steps.png`` cover all scenes (failed ones are listed with their error).

Decisions (recorded in summary.json too):

* Metrics are computed on the images exactly as written: the prediction and the ground
  truth are quantized to 8 bits (:func:`viewrt.geometry.image_to_uint8`) first, so every
  number can be recomputed from the PNGs. LPIPS is not computed (``"lpips": null`` with
  the reason, :data:`viewrt.metrics.LPIPS_NOTE`). An infinite PSNR (identical images) is
  written as ``null``: JSON has no infinity.
* Scene normalization: an offline run knows every camera up front, so the frame is
  computed from the cameras of all input and target views, as upstream does, and handed
  to the renderer before the first view is encoded.
* Latency of a step is the renderer's own per-component timing (``last_timings``) of the
  ``add_view`` and the ``render`` calls. One add + render + reset runs first as a
  warm-up and is discarded; this is a single run, not a benchmark (see ``viewrt bench``).
* Peak memory is the process's peak resident set size so far (``ru_maxrss``; device
  memory is not included).

Modules: frames.py (which frames are inputs and targets), scene.py (one scene, the step
loop), scenes.py (a list of scenes), writers.py (JSON/CSV records, plot, contact sheet),
precision.py (a reduced-precision backend against its fp32 self).
"""

from viewrt.evaluation.frames import (
    DEFAULT_TARGETS,
    SYNTHETIC_FRAMES,
    SceneSkipped,
    default_targets,
    select_frames,
)
from viewrt.evaluation.scene import BackendUnavailable, load_images, run_scene
from viewrt.evaluation.scenes import ECHO_FAILURES, run_list, scene_line
from viewrt.evaluation.writers import UNTRAINED, jsonable, mean, write_json

__all__ = [
    "DEFAULT_TARGETS",
    "ECHO_FAILURES",
    "SYNTHETIC_FRAMES",
    "UNTRAINED",
    "BackendUnavailable",
    "SceneSkipped",
    "default_targets",
    "jsonable",
    "load_images",
    "mean",
    "run_list",
    "run_scene",
    "scene_line",
    "select_frames",
    "write_json",
]
