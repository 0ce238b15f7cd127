"""In-memory form of a benchmark: every sample set is a handful of tensors.

Averaged features are one [N, D] tensor per modality. Temporal (per-second) features are ragged:
one [sum_i T_i, D] tensor plus offsets, padded per batch by a single gather, so that neither
loading nor batching ever loops over samples in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Features:
    """One modality of N samples.

    Attributes:
        values: [N, D] for averaged features, or [sum_i T_i, D] for temporal features.
        offsets: None for averaged features; for temporal features an int64 [N + 1] tensor such that
            sample i occupies rows offsets[i]:offsets[i + 1] of `values`.
    """

    values: Tensor
    offsets: Tensor | None = None

    @property
    def temporal(self) -> bool:
        return self.offsets is not None

    @property
    def dim(self) -> int:
        return int(self.values.shape[-1])

    def __len__(self) -> int:
        return int(self.values.shape[0]) if self.offsets is None else int(self.offsets.numel() - 1)

    def lengths(self) -> Tensor:
        """Number of time steps per sample (all ones for averaged features)."""
        if self.offsets is None:
            return torch.ones(len(self), dtype=torch.long)
        return self.offsets[1:] - self.offsets[:-1]

    def take(self, index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Features of the samples `index`: ([B, D], None) or padded ([B, T_max, D], mask [B, T_max]).

        The mask is True on real time steps; T_max is the longest sequence in this batch.
        """
        if self.offsets is None:
            return self.values[index], None
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        t_max = int(lengths.max()) if lengths.numel() else 0
        steps = torch.arange(t_max)
        mask = steps[None, :] < lengths[:, None]
        rows = torch.where(mask, starts[:, None] + steps[None, :], torch.zeros_like(starts)[:, None])
        padded = self.values[rows] * mask[..., None].to(self.values.dtype)
        return padded, mask

    def subset(self, index: Tensor) -> Features:
        if self.offsets is None:
            return Features(self.values[index])
        lengths = self.lengths()[index]
        starts = self.offsets[index]
        offsets = torch.zeros(len(index) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        # Row r of the new tensor comes from starts[sample(r)] + (r - offsets[sample(r)]).
        sample_of_row = torch.repeat_interleave(torch.arange(len(index)), lengths)
        rows = starts[sample_of_row] + (torch.arange(int(offsets[-1])) - offsets[sample_of_row])
        return Features(self.values[rows], offsets)

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        if not parts:
            raise ValueError("Features.concat needs at least one part")
        if any(p.temporal != parts[0].temporal for p in parts):
            raise ValueError("cannot concatenate averaged and temporal features")
        values = torch.cat([p.values for p in parts])
        if not parts[0].temporal:
            return Features(values)
        lengths = torch.cat([p.lengths() for p in parts])
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        return Features(values, offsets)


@dataclass
class Batch:
    """What a method sees in one training or evaluation step.

    Attributes:
        audio, video: [B, D] (averaged) or [B, T, D] (temporal, zero-padded).
        labels: [B] global class ids.
        text: [B, text_dim] text embedding of each sample's class (None at evaluation).
        audio_mask, video_mask: [B, T] True on real time steps (temporal only).
        negative: for methods with `uses_negatives`, a batch of the same size whose sample i is a
            random sample of a class other than labels[i], with that class's text.
        classes: training batches only: [C] global ids of the training phase's classes (sorted), the
            label space of a classification loss (TCaF's cross-entropy).
        class_text: training batches only: [C, text_dim] text embedding of each of `classes`.
    """

    audio: Tensor
    video: Tensor
    labels: Tensor
    text: Tensor | None = None
    audio_mask: Tensor | None = None
    video_mask: Tensor | None = None
    negative: Batch | None = None
    classes: Tensor | None = None
    class_text: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def targets(self) -> Tensor:
        """[B] position of each sample's label in `classes` (training batches only)."""
        if self.classes is None:
            raise ValueError("this batch carries no class set (only training batches do)")
        return torch.searchsorted(self.classes, self.labels)

    def to(self, device: torch.device | str) -> Batch:
        def move(x):
            return None if x is None else x.to(device, non_blocking=True)

        return Batch(
            move(self.audio), move(self.video), move(self.labels), move(self.text),
            move(self.audio_mask), move(self.video_mask),
            None if self.negative is None else self.negative.to(device),
            move(self.classes), move(self.class_text),
        )


@dataclass
class SampleSet:
    """Samples of one sub-split (or a union of sub-splits), in tensors."""

    audio: Features
    video: Features
    labels: Tensor  # [N] int64 global class ids
    video_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = int(self.labels.shape[0])
        if len(self.audio) != n or len(self.video) != n:
            raise ValueError(f"sample count mismatch: {len(self.audio)} audio, {len(self.video)} video, {n} labels")
        if self.video_ids and len(self.video_ids) != n:
            raise ValueError(f"{len(self.video_ids)} video ids for {n} samples")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def temporal(self) -> bool:
        return self.audio.temporal

    def batch(self, index: Tensor, class_text: Tensor | None = None) -> Batch:
        """Batch of the samples `index`; with `class_text` ([C_all, text_dim]) each sample gets its class text."""
        audio, audio_mask = self.audio.take(index)
        video, video_mask = self.video.take(index)
        labels = self.labels[index]
        text = None if class_text is None else class_text[labels]
        return Batch(audio, video, labels, text, audio_mask, video_mask)

    def subset(self, index: Tensor) -> SampleSet:
        ids = [self.video_ids[i] for i in index.tolist()] if self.video_ids else []
        return SampleSet(self.audio.subset(index), self.video.subset(index), self.labels[index], ids)

    @staticmethod
    def concat(parts: list[SampleSet]) -> SampleSet:
        return SampleSet(
            Features.concat([p.audio for p in parts]),
            Features.concat([p.video for p in parts]),
            torch.cat([p.labels for p in parts]),
            [v for p in parts for v in p.video_ids],
        )


@dataclass
class Phase:
    """One phase of the protocol (protocol.md section 3): its samples and its class search space."""

    name: str
    samples: SampleSet
    seen: Tensor  # [S] global class ids
    unseen: Tensor  # [U] global class ids (empty for training phases)

    @property
    def classes(self) -> Tensor:
        """The search space: seen then unseen class ids."""
        return torch.cat([self.seen, self.unseen])


PHASES = ("stage1_train", "stage1_val", "stage2_train", "test")
SUBSPLITS = (
    "stage_1_train", "stage_1_val_seen", "stage_1_val_unseen",
    "stage_2_train", "stage_2_test_seen", "stage_2_test_unseen",
)


@dataclass
class Benchmark:
    """A loaded benchmark.

    Attributes:
        name: "UCF", "ActivityNet" or "VGGSound" (or a synthetic name).
        class_names: canonical names of all classes; a class id is an index into this list.
        text: [C_all, text_dim] text embedding row of each class id (by name, or the reference's
            misaligned rows when loaded with legacy_text_order).
        phases: the four phases of protocol.md section 3, keyed by PHASES.
        info: provenance (root, feature set, split, temporal, legacy_text_order, files read, ...).
    """

    name: str
    class_names: list[str]
    text: Tensor
    phases: dict[str, Phase]
    info: dict = field(default_factory=dict)

    @property
    def audio_dim(self) -> int:
        return self.phases["stage1_train"].samples.audio.dim

    @property
    def video_dim(self) -> int:
        return self.phases["stage1_train"].samples.video.dim

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[1])

    @property
    def temporal(self) -> bool:
        return self.phases["stage1_train"].samples.temporal
