"""avgzsl: audio-visual generalised zero-shot learning under one exact benchmark protocol."""

__version__ = "0.1.0"
