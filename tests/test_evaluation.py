"""The evaluator against small cases computed by hand (protocol.md section 4)."""

import pytest
import torch

from avgzsl.evaluation import beta_grid, gzsl_scores

# Seen classes 0, 1; unseen class 2. Rows are samples, columns classes 0, 1, 2.
DIST = torch.tensor([
    [0.1, 0.5, 0.3],  # label 0: right at beta 0 and 0.1; at beta 0.21 class 2 (0.3) beats 0.31
    [0.9, 0.1, 0.4],  # label 1: right up to beta 0.3
    [0.5, 0.6, 0.7],  # label 2: wrong (class 0) until beta > 0.2
    [0.8, 0.9, 0.1],  # label 2: always right
])
LABELS = torch.tensor([0, 1, 2, 2])


def test_hand_computed_grid_and_first_best_beta():
    s = gzsl_scores(DIST, LABELS, [0, 1], [2], betas=[0.0, 0.1, 0.21, 1.0])
    # beta 0 and 0.1: S = 1, U = 1/2; beta 0.21: S = 1/2, U = 1; beta 1: S = 0, U = 1.
    assert s.per_beta["S"] == pytest.approx([100, 100, 50, 0])
    assert s.per_beta["U"] == pytest.approx([50, 50, 100, 100])
    assert s.per_beta["HM"] == pytest.approx([200 / 3, 200 / 3, 200 / 3, 0])
    # Three betas tie on HM: the first one wins.
    assert s.beta == 0.0
    assert (s.S, s.U) == pytest.approx((100, 50))
    assert s.HM == pytest.approx(200 / 3)
    # ZSL: among unseen classes only (just class 2) both unseen samples are right.
    assert s.ZSL == pytest.approx(100)


def test_zsl_restricts_the_search_space_to_unseen_classes():
    # Unseen classes 2 and 3. Sample of class 2 is nearest to seen class 0 overall,
    # but nearer to 2 than to 3 among the unseen classes.
    dist = torch.tensor([[0.0, 5.0, 1.0, 2.0], [5.0, 5.0, 3.0, 0.5]])
    labels = torch.tensor([2, 3])
    s = gzsl_scores(dist, labels, [0, 1], [2, 3], betas=[0.0])
    assert s.U == pytest.approx(50)  # the class-2 sample is lost to seen class 0
    assert s.ZSL == pytest.approx(100)


def test_ties_go_to_the_first_class_of_the_search_space():
    dist = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    s = gzsl_scores(dist, torch.tensor([0, 1]), seen_classes=[0], unseen_classes=[1], betas=[0.0])
    assert s.S == 100 and s.U == 0  # both samples predicted as class 0


def test_a_class_without_samples_is_left_out_of_the_mean():
    # Seen classes 0, 1, 3; class 3 has no sample. S averages classes 0 (1/2) and 1 (1/1) only.
    dist = torch.tensor([[0.1, 0.9, 0.9, 0.9], [0.9, 0.1, 0.9, 0.9], [0.9, 0.1, 0.9, 0.9], [0.9, 0.9, 0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 2])
    s = gzsl_scores(dist, labels, [0, 1, 3], [2], betas=[0.0])
    assert s.S == pytest.approx((50 + 100) / 2)
    assert s.U == pytest.approx(100)


def test_per_class_mean_is_not_per_sample_mean():
    # Class 0 has 3 samples all right, class 1 one sample wrong: per-class 50, per-sample would be 75.
    dist = torch.tensor([[0.1, 0.9, 0.9]] * 3 + [[0.1, 0.9, 0.9]])
    labels = torch.tensor([0, 0, 0, 1])
    s = gzsl_scores(dist, labels, [0, 1], [2], betas=[0.0])
    assert s.S == pytest.approx(50)


def test_columns_map_through_class_ids_and_extra_columns_are_ignored():
    # Columns are classes 7, 3, 9, 5; the phase only uses 3 (seen) and 9 (unseen). Column 7 is nearest
    # for both samples but is not in the search space.
    dist = torch.tensor([[0.0, 0.2, 0.3, 0.0], [0.0, 0.4, 0.1, 0.0]])
    s = gzsl_scores(dist, torch.tensor([3, 9]), [3], [9], betas=[0.0], class_ids=[7, 3, 9, 5])
    assert (s.S, s.U, s.ZSL) == pytest.approx((100, 100, 100))


def _naive(dist, labels, seen, unseen, betas):
    """Straightforward loops, written independently of the vectorised code."""
    space = list(seen) + list(unseen)
    out = []
    for b in betas:
        acc = {}
        for c in space:
            idx = [i for i in range(len(labels)) if labels[i] == c]
            if not idx:
                continue
            hits = 0
            for i in idx:
                row = [float(dist[i, k]) + (b if k in seen else 0.0) for k in space]
                hits += space[row.index(min(row))] == c
            acc[c] = hits / len(idx)
        s = sum(acc[c] for c in seen if c in acc) / max(1, len([c for c in seen if c in acc]))
        u = sum(acc[c] for c in unseen if c in acc) / max(1, len([c for c in unseen if c in acc]))
        out.append((s, u, 2 * s * u / (s + u) if s + u else 0.0))
    return out


def test_vectorised_grid_matches_naive_loops():
    g = torch.Generator().manual_seed(0)
    dist = torch.rand(60, 7, generator=g)
    labels = torch.randint(0, 7, (60,), generator=g)
    seen, unseen = [0, 2, 4, 6], [1, 3, 5]
    betas = beta_grid(0, 1, 11)
    s = gzsl_scores(dist, labels, seen, unseen, betas)
    naive = _naive(dist, labels, seen, unseen, betas.tolist())
    assert s.per_beta["S"] == pytest.approx([100 * x[0] for x in naive])
    assert s.per_beta["U"] == pytest.approx([100 * x[1] for x in naive])
    best = max(range(len(naive)), key=lambda i: (naive[i][2], -i))
    assert s.beta == pytest.approx(float(betas[best]))


def test_default_grid_is_the_references():
    assert beta_grid().tolist() == pytest.approx([i * 0.2 for i in range(16)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seen_classes": [0, 2], "unseen_classes": [2]}, "both seen and unseen"),
        ({"seen_classes": [0], "unseen_classes": [5]}, "no distance column"),
        ({"seen_classes": [0], "unseen_classes": [1]}, "outside the search space"),
    ],
)
def test_inconsistent_inputs_are_refused_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gzsl_scores(DIST, LABELS, betas=[0.0], **kwargs)
