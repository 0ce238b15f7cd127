"""DAAN: Discrepancy-Aware Attention Network (arXiv 2412.11715), first public implementation.

Modules:
- `qdma.py`: the QDMA unit (differential attention + refinement, causal TCN bypass) and the Base's MLP encoder.
- `csgm.py`: CSGM's factor (convergence rate, optimisation rate, eta) and the gradient-scaling pair that
  applies a per-sample factor to one part's parameter gradients without per-sample backward passes.
- `model.py`: `DAANConfig`, the registered method "daan", and `ablation_variants()` (Table II rows).

Stated vs reconstructed choices are listed in daan.md; each reconstructed one is a `DAANConfig` field.
"""

from avgzsl.methods.daan.model import DAAN, DAANConfig, ablation_variants

__all__ = ["DAAN", "DAANConfig", "ablation_variants"]
