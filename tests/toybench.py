"""A small in-memory benchmark (no files) and a toy method, for protocol and sampler tests."""

from dataclasses import dataclass

import torch
from torch import nn

from avgzsl.data.types import Benchmark, Features, Phase, SampleSet
from avgzsl.methods import Method, OptimConfig, register_method


def make_benchmark(n_classes: int = 10, per_class: int = 12, dim: int = 16, text_dim: int = 8, seed: int = 0,
                   temporal: bool = False) -> Benchmark:
    """Classes 0-3 stage-1 train/val-seen, 4-5 val-unseen, 0-5 stage-2 train/test-seen, 6-9 test-unseen.

    Features are a fixed linear map of the class text plus noise, so the task is learnable and transfers.
    """
    g = torch.Generator().manual_seed(seed)
    text = nn.functional.normalize(torch.randn(n_classes, text_dim, generator=g), dim=1)
    map_a, map_v = torch.randn(text_dim, dim, generator=g), torch.randn(text_dim, dim, generator=g)

    def samples(classes: list[int]) -> SampleSet:
        labels = torch.tensor(classes).repeat_interleave(per_class)
        a = text[labels] @ map_a + 0.3 * torch.randn(len(labels), dim, generator=g)
        v = text[labels] @ map_v + 0.3 * torch.randn(len(labels), dim, generator=g)
        if not temporal:
            return SampleSet(Features(a), Features(v), labels)
        lengths = torch.randint(2, 5, (len(labels),), generator=g)
        offsets = torch.zeros(len(labels) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        rep = torch.repeat_interleave(torch.arange(len(labels)), lengths)
        return SampleSet(Features(a[rep], offsets), Features(v[rep], offsets.clone()), labels)

    s1, vs, vu = samples([0, 1, 2, 3]), samples([0, 1, 2, 3]), samples([4, 5])
    ts, tu = samples([0, 1, 2, 3, 4, 5]), samples([6, 7, 8, 9])
    t = torch.tensor
    phases = {
        "stage1_train": Phase("stage1_train", s1, t([0, 1, 2, 3]), t([], dtype=torch.long)),
        "stage1_val": Phase("stage1_val", SampleSet.concat([vs, vu]), t([0, 1, 2, 3]), t([4, 5])),
        "stage2_train": Phase("stage2_train", SampleSet.concat([s1, vs, vu]), t([0, 1, 2, 3, 4, 5]),
                              t([], dtype=torch.long)),
        "test": Phase("test", SampleSet.concat([ts, tu]), t([0, 1, 2, 3, 4, 5]), t([6, 7, 8, 9])),
    }
    return Benchmark("Toy", [f"class{i}" for i in range(n_classes)], text, phases, {"root": "memory"})


@dataclass
class ToyConfig(OptimConfig):
    embed_dim: int = 8
    margin: float = 1.0


@register_method("toy")
class ToyMethod(Method):
    """Linear maps of [audio, video] and text into one space; triplet loss against the negative's text.

    Registered from a test file: the protocol runs it without knowing it exists.
    """

    Config = ToyConfig
    uses_negatives = True

    def __init__(self, cfg, dims):
        super().__init__(cfg, dims)
        self.av = nn.Linear(dims.audio_dim + dims.video_dim, cfg.embed_dim)
        self.w = nn.Linear(dims.text_dim, cfg.embed_dim)

    def _pool(self, x, mask):
        if mask is None:
            return x
        return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    def embed_samples(self, batch):
        return self.av(torch.cat([self._pool(batch.audio, batch.audio_mask),
                                  self._pool(batch.video, batch.video_mask)], 1))

    def embed_classes(self, class_text):
        return self.w(class_text)

    def training_step(self, batch):
        x = self.embed_samples(batch)
        loss = nn.functional.triplet_margin_loss(x, self.w(batch.text), self.w(batch.negative.text),
                                                 margin=self.cfg.margin)
        return {"loss": loss, "triplet": loss}


def make_separable_benchmark(temporal: bool = False, seed: int = 0, dim: int = 32, text_dim: int = 16,
                             per_class: int = 16, step_noise: float = 3.0) -> Benchmark:
    """An easily separable benchmark shaped like the real ones, for the learning test of every method.

    12 classes: 0-5 stage-1 train / val seen, 6-7 val unseen, 0-7 stage-2 train and test seen, 8-11 test
    unseen. Each modality's feature is a fixed random linear map of the class text plus a common offset
    (as real features have) and noise. Temporal samples have 3 to 8 steps whose *mean* is the video's
    feature and whose steps add per-step noise twice the class signal's scale, so a method must pool time
    steps (not read one step, nor the differences between steps) to do well.
    """
    g = torch.Generator().manual_seed(seed)
    n_classes = 12
    text = nn.functional.normalize(torch.randn(n_classes, text_dim, generator=g), dim=1)
    maps = {m: torch.randn(text_dim, dim, generator=g) * 1.5 for m in ("audio", "video")}
    offsets = {m: 1.0 + 0.5 * torch.randn(dim, generator=g) for m in ("audio", "video")}

    def modality(m: str, labels: torch.Tensor, lengths: torch.Tensor | None) -> Features:
        x = text[labels] @ maps[m] + offsets[m] + 0.3 * torch.randn(len(labels), dim, generator=g)
        if lengths is None:
            return Features(x)
        offs = torch.zeros(len(labels) + 1, dtype=torch.long)
        offs[1:] = torch.cumsum(lengths, 0)
        owner = torch.repeat_interleave(torch.arange(len(labels)), lengths)
        steps = step_noise * torch.randn(int(offs[-1]), dim, generator=g)
        steps -= torch.zeros(len(labels), dim).index_add_(0, owner, steps)[owner] / lengths[owner, None]  # zero mean
        return Features(x[owner] + steps, offs)

    def samples(classes: list[int]) -> SampleSet:
        labels = torch.tensor(classes).repeat_interleave(per_class)
        la = torch.randint(3, 9, (len(labels),), generator=g) if temporal else None
        lv = torch.randint(3, 9, (len(labels),), generator=g) if temporal else None
        return SampleSet(modality("audio", labels, la), modality("video", labels, lv), labels)

    seen1, unseen1, seen2, unseen2 = list(range(6)), [6, 7], list(range(8)), [8, 9, 10, 11]
    s1, vs, vu = samples(seen1), samples(seen1), samples(unseen1)
    t = torch.tensor
    empty = t([], dtype=torch.long)
    phases = {
        "stage1_train": Phase("stage1_train", s1, t(seen1), empty),
        "stage1_val": Phase("stage1_val", SampleSet.concat([vs, vu]), t(seen1), t(unseen1)),
        "stage2_train": Phase("stage2_train", SampleSet.concat([s1, vs, vu]), t(seen2), empty),
        "test": Phase("test", SampleSet.concat([samples(seen2), samples(unseen2)]), t(seen2), t(unseen2)),
    }
    return Benchmark("Separable", [f"class{i}" for i in range(n_classes)], text, phases, {"root": "memory"})
