"""avgzsl: audio-visual generalised zero-shot learning under one exact benchmark protocol.

The Python API mirrors the command line (see `avgzsl.experiments`):

    import avgzsl
    avgzsl.run(method="daan", dataset="UCF", root="data/synth/UCF", seeds=[0, 1, 2])
    avgzsl.compare(methods=["avca", "daan", "linear"], dataset="UCF", root="data/synth/UCF")
"""

__version__ = "0.2.0"

_API = ("run", "ablate", "sweep", "compare", "evaluate")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    # Lazy, so that `avgzsl --version` and `import avgzsl` do not import torch.
    if name in _API:
        from avgzsl import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module 'avgzsl' has no attribute {name!r}")
