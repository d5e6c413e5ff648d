"""The benchmark: a torch-free harness (harness.py) that times the add-view step of any
object with the renderer interface, memory probes (memory.py) and report writers
(report.py). ``viewrt bench`` composes it with the PyTorch baselines of
viewrt.models.baselines."""

from viewrt.bench.harness import BenchConfig, run_bench

__all__ = ["BenchConfig", "run_bench"]
