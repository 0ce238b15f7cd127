"""Benchmark data: on-disk readers, class/text mapping, the synthetic generator, batch sampling, and the
packaged metadata of the three real benchmarks (avgzsl.data.packaged)."""

from avgzsl.data.types import PHASES, SUBSPLITS, Batch, Benchmark, Features, Phase, SampleSet

__all__ = ["PHASES", "SUBSPLITS", "Batch", "Benchmark", "Features", "Phase", "SampleSet"]
