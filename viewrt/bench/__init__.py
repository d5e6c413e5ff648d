"""The benchmark: a torch-free harness (harness.py) that times the add-view step of any
object with the renderer interface, the roofline's GEMM probes (gemm.py, roofline.py),
memory probes (memory.py) and report writers (report.py). ``viewrt bench`` composes it
with the runtime (a RuntimeAccess: the harness does not import viewrt.runtime) and the
PyTorch baselines of viewrt.models.baselines."""

from viewrt.bench.harness import BenchConfig, RuntimeAccess, run_bench

__all__ = ["BenchConfig", "RuntimeAccess", "run_bench"]
