"""Reduced precision against fp32 on the same views: the image error a bf16/f16 backend
adds, step by step (used by ``viewrt infer``; ``viewrt bench`` scores its own renders).

Torch-free: both renderers are runtime renderers (e.g. OpenVINO in bf16 and in f32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from viewrt.metrics import psnr


def against_fp32(
    open_reduced: Callable, open_fp32: Callable, views: Sequence[tuple], targets: Sequence
) -> dict:
    """Add the same views one by one to a reduced-precision and an fp32 renderer, render the
    targets after each, and compare the float images (no 8-bit rounding).

    Args:
        open_reduced, open_fp32: callables returning an open renderer (closed here).
        views: (image [3, S, S] float in [0, 1], camera) pairs, added in order.
        targets: target cameras.
    Returns:
        {"precision", "reference_precision", "steps": [{"views", "max_abs", "psnr_db"}],
        "max_abs": worst over the steps, "psnr_db_min": worst mean PSNR over the steps}.
        PSNR is ``10 log10(1 / MSE)`` on [0, 1] images, the mean over the targets.
    """
    a, b = open_reduced(), None
    try:
        b = open_fp32()
        steps = []
        for i, (image, cam) in enumerate(views):
            a.add_view(image, cam)
            b.add_view(image, cam)
            x, y = a.render(list(targets)), b.render(list(targets))
            p = [psnr(np.clip(u, 0, 1), np.clip(v, 0, 1)) for u, v in zip(x, y)]
            steps.append(
                {
                    "views": i + 1,
                    "max_abs": float(np.abs(x - y).max()),
                    "psnr_db": float(np.mean(p)),
                }
            )
        return {
            "precision": a.info().get("precision"),
            "reference_precision": b.info().get("precision"),
            "steps": steps,
            "max_abs": max(s["max_abs"] for s in steps),
            "psnr_db_min": min(s["psnr_db"] for s in steps),
        }
    finally:
        a.close()
        if b is not None:
            b.close()
