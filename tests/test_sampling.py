import torch

from avgzsl.data.sampling import BalancedBatchSampler
from avgzsl.data.types import Features, SampleSet


def _unbalanced():
    # class 0: 2 samples, class 5: 30 samples, class 9: 8 samples
    labels = torch.tensor([5] * 30 + [0] * 2 + [9] * 8)
    feats = torch.arange(len(labels), dtype=torch.float32)[:, None].repeat(1, 3)
    return SampleSet(Features(feats), Features(feats.clone()), labels)


def test_batches_are_class_balanced_despite_unbalanced_classes():
    samples = _unbalanced()
    text = torch.eye(10)
    sampler = BalancedBatchSampler(samples, text, 300, torch.Generator().manual_seed(0))
    labels = torch.cat([sampler.draw().labels for _ in range(20)])
    counts = torch.bincount(labels, minlength=10)[[0, 5, 9]].float()
    share = counts / counts.sum()
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03), share
    # and the rows drawn really are the samples of the label (features encode the row index)
    batch = sampler.draw()
    rows = batch.audio[:, 0].long()
    assert torch.equal(samples.labels[rows], batch.labels)
    assert torch.equal(batch.text, text[batch.labels])


def test_small_class_is_drawn_with_replacement():
    sampler = BalancedBatchSampler(_unbalanced(), torch.eye(10), 300, torch.Generator().manual_seed(1))
    rows = sampler.draw().audio[:, 0].long()
    class0_rows = rows[(rows == 30) | (rows == 31)]
    assert class0_rows.numel() > 2  # more draws of class 0 than it has samples
    assert set(class0_rows.tolist()) == {30, 31}


def test_negatives_come_from_other_classes_uniformly():
    sampler = BalancedBatchSampler(_unbalanced(), torch.eye(10), 600, torch.Generator().manual_seed(2),
                                   with_negatives=True)
    batch = sampler.draw()
    neg = batch.negative
    assert neg is not None and len(neg) == len(batch)
    assert not torch.any(neg.labels == batch.labels)
    assert torch.equal(neg.text, torch.eye(10)[neg.labels])
    # given positive class 5, the negative is class 0 or 9 about equally often
    others = neg.labels[batch.labels == 5]
    frac0 = (others == 0).float().mean()
    assert 0.35 < frac0 < 0.65


def test_same_generator_seed_gives_same_batches():
    a = BalancedBatchSampler(_unbalanced(), torch.eye(10), 64, torch.Generator().manual_seed(3), True).draw()
    b = BalancedBatchSampler(_unbalanced(), torch.eye(10), 64, torch.Generator().manual_seed(3), True).draw()
    c = BalancedBatchSampler(_unbalanced(), torch.eye(10), 64, torch.Generator().manual_seed(4), True).draw()
    assert torch.equal(a.audio, b.audio) and torch.equal(a.negative.audio, b.negative.audio)
    assert not torch.equal(a.audio, c.audio)


def test_temporal_features_are_padded_with_a_mask():
    offsets = torch.tensor([0, 2, 5, 6])
    values = torch.arange(6, dtype=torch.float32)[:, None] + 1
    feats = Features(values, offsets)
    padded, mask = feats.take(torch.tensor([1, 2, 0]))
    assert padded.shape == (3, 3, 1)
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert padded[:, :, 0].tolist() == [[3, 4, 5], [6, 0, 0], [1, 2, 0]]
    sub = feats.subset(torch.tensor([2, 0]))
    assert sub.offsets.tolist() == [0, 1, 3] and sub.values[:, 0].tolist() == [6, 1, 2]
