"""Scene data: LVSM-processed RealEstate10K readers and a synthetic scene generator.

The format is described in full in ``docs/data.md``. One module per job:

* :mod:`viewrt.data.roots`: where files are (:class:`DataRoots`: paths written on another
  machine, looked for here);
* :mod:`viewrt.data.readers`: list files, scene JSONs and evaluation indices
  (:func:`load_scene`, :func:`load_scene_list`, :func:`load_eval_index`,
  :func:`select_index_frames`), validated up front;
* :mod:`viewrt.data.images`: a frame's image decoded by mode and its intrinsics checked
  (:func:`load_frame`, :func:`image_to_float_rgb`, :func:`check_intrinsics_plausible`);
* :mod:`viewrt.data.synthetic`: the ray-cast synthetic scenes with exact cameras
  (:func:`synthetic_cameras`, :func:`synthetic_views`) and frame sequences with
  ground-truth depth (:func:`synthetic_sequence`), in memory;
* :mod:`viewrt.data.sequence`: frame sequences for frame-by-frame models, from a scene or
  a folder of images (:func:`load_sequence`, :func:`iter_frames`);
* :mod:`viewrt.data.writers`: files written (:func:`make_synthetic_scene`,
  :func:`make_synthetic_sequence`, :func:`make_synthetic_list`,
  :func:`make_processed_dataset`, :func:`make_eval_index`).

Errors are :class:`~viewrt.errors.ViewrtError` naming the file, frame index and key. The
package is a leaf: it imports only numpy, PIL and viewrt's errors and geometry.
"""

from viewrt.data.images import check_intrinsics_plausible, image_to_float_rgb, load_frame
from viewrt.data.readers import (
    Frame,
    Scene,
    load_eval_index,
    load_scene,
    load_scene_list,
    select_index_frames,
)
from viewrt.data.roots import DataRoots
from viewrt.data.sequence import FrameSequence, SequenceFrame, iter_frames, load_sequence
from viewrt.data.synthetic import (
    STYLES,
    TRAJECTORIES,
    synthetic_cameras,
    synthetic_sequence,
    synthetic_views,
)
from viewrt.data.writers import (
    make_eval_index,
    make_processed_dataset,
    make_synthetic_list,
    make_synthetic_scene,
    make_synthetic_sequence,
)

__all__ = [
    "Frame",
    "Scene",
    "DataRoots",
    "load_scene",
    "load_scene_list",
    "load_eval_index",
    "select_index_frames",
    "load_frame",
    "image_to_float_rgb",
    "check_intrinsics_plausible",
    "STYLES",
    "TRAJECTORIES",
    "FrameSequence",
    "SequenceFrame",
    "iter_frames",
    "load_sequence",
    "synthetic_cameras",
    "synthetic_sequence",
    "synthetic_views",
    "make_synthetic_scene",
    "make_synthetic_sequence",
    "make_synthetic_list",
    "make_processed_dataset",
    "make_eval_index",
]
