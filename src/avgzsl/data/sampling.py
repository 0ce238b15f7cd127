"""Class-balanced batches drawn with replacement, by indexing tensors (no DataLoader, no workers).

Matches the reference sampler (AVCA's WeightedRandomBatchSampler with alpha = 1): every sample of
class c has weight 1 / (C * n_c), i.e. a class is drawn uniformly and then a sample of it uniformly.
Negatives follow the reference dataset: for each positive, a random sample of a different class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from avgzsl.data.types import Batch, SampleSet


class BalancedBatchSampler:
    """Draws class-balanced batches of a SampleSet.

    Args:
        samples: the training samples.
        class_text: [C_all, text_dim] text embedding row of each class id.
        batch_size: samples per batch.
        generator: torch.Generator that makes the draws reproducible.
        with_negatives: attach to each batch a negative batch (a sample of another class + its text).
    """

    def __init__(
        self, samples: SampleSet, class_text: Tensor, batch_size: int, generator: torch.Generator,
        with_negatives: bool = False,
    ):
        self.samples = samples
        self.class_text = class_text
        self.batch_size = int(batch_size)
        self.generator = generator
        self.with_negatives = with_negatives
        labels = samples.labels
        self.classes, counts = torch.unique(labels, return_counts=True)  # sorted
        self.classes_text = class_text[self.classes]
        if self.classes.numel() < 2 and with_negatives:
            raise ValueError("negatives need at least two training classes")
        # Samples sorted by class: class k owns rows starts[k] : starts[k] + counts[k] of `order`.
        self.order = torch.argsort(labels, stable=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def _draw_from_classes(self, cls_pos: Tensor) -> Tensor:
        u = torch.rand(cls_pos.shape, generator=self.generator, dtype=torch.float64)
        within = (u * self.counts[cls_pos]).long().clamp_max(self.counts[cls_pos] - 1)
        return self.order[self.starts[cls_pos] + within]

    def draw_indices(self) -> tuple[Tensor, Tensor | None]:
        """Sample indices of one batch and, if negatives are on, of its negatives."""
        n_cls = self.classes.numel()
        cls_pos = torch.randint(n_cls, (self.batch_size,), generator=self.generator)
        index = self._draw_from_classes(cls_pos)
        if not self.with_negatives:
            return index, None
        # A uniformly random *other* class: shift by 1..n_cls-1 modulo n_cls.
        shift = torch.randint(1, n_cls, (self.batch_size,), generator=self.generator)
        neg_index = self._draw_from_classes((cls_pos + shift) % n_cls)
        return index, neg_index

    def draw(self) -> Batch:
        index, neg_index = self.draw_indices()
        batch = self.samples.batch(index, self.class_text)
        batch.classes, batch.class_text = self.classes, self.classes_text
        if neg_index is not None:
            batch.negative = self.samples.batch(neg_index, self.class_text)
        return batch
