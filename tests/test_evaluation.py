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


def test_ties_go_to_the_lowest_input_column_seen_or_unseen():
    dist = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    # Column 0 seen, column 1 unseen: the tie goes to column 0 (seen).
    s = gzsl_scores(dist, torch.tensor([0, 1]), seen_classes=[0], unseen_classes=[1], betas=[0.0])
    assert s.S == 100 and s.U == 0  # both samples predicted as class 0
    # Column 0 unseen, column 1 seen: the tie goes to column 0, now the unseen class (seen-first
    # reordering would have given it to the seen class 1).
    s = gzsl_scores(dist, torch.tensor([0, 1]), seen_classes=[1], unseen_classes=[0], betas=[0.0])
    assert s.U == 100 and s.S == 0
    # Through class_ids: column 0 is class 5 (unseen), column 1 class 2 (seen), a tie goes to class 5.
    s = gzsl_scores(dist, torch.tensor([5, 2]), seen_classes=[2], unseen_classes=[5], betas=[0.0],
                    class_ids=[5, 2])
    assert s.U == 100 and s.S == 0
    # A tie created by calibration: seen column 0 at 0.3 + beta 0.2 == unseen column 2 at 0.5.
    dist = torch.tensor([[0.25, 0.9, 0.5], [0.25, 0.9, 0.5]], dtype=torch.float64)
    s = gzsl_scores(dist, torch.tensor([0, 2]), seen_classes=[0, 1], unseen_classes=[2], betas=[0.25])
    assert s.S == 100 and s.U == 0  # 0.25 + 0.25 == 0.5 exactly: the lower column (seen class 0) wins


def test_zsl_ties_go_to_the_lowest_input_column():
    # Unseen classes in columns 3 and 1 (listed in that order): a tie between them goes to column 1.
    dist = torch.tensor([[0.0, 0.5, 9.0, 0.5]])
    s = gzsl_scores(dist, torch.tensor([1]), seen_classes=[0, 2], unseen_classes=[3, 1], betas=[0.0])
    assert s.ZSL == 100
    s = gzsl_scores(dist, torch.tensor([3]), seen_classes=[0, 2], unseen_classes=[3, 1], betas=[0.0])
    assert s.ZSL == 0


def _naive_predictions(dist, seen, unseen, beta, columns=None):
    """Predicted class of every row: loop over the searched columns in input order, keep the first minimum."""
    ids = list(range(dist.shape[1])) if columns is None else list(columns)
    space = set(seen) | set(unseen)
    preds = []
    for i in range(dist.shape[0]):
        best, best_cls = None, None
        for j, c in enumerate(ids):
            if c not in space:
                continue
            v = float(dist[i, j]) + (beta if c in seen else 0.0)
            if best is None or v < best:  # strict: an equal value later never replaces the first
                best, best_cls = v, c
        preds.append(best_cls)
    return preds


def _per_class_mean(preds, labels, classes):
    accs = []
    for c in classes:
        idx = [i for i, y in enumerate(labels) if y == c]
        if idx:
            accs.append(sum(preds[i] == c for i in idx) / len(idx))
    return sum(accs) / len(accs) if accs else 0.0


def test_random_tied_score_matrices_match_a_loop_that_breaks_ties_by_input_column():
    """200 integer-valued score matrices (many exact ties, also between seen and unseen columns), with
    classes in a random column order and random seen/unseen roles: S, U per beta and ZSL agree exactly."""
    g = torch.Generator().manual_seed(13)
    differences = ties_between_seen_and_unseen = 0
    for _ in range(200):
        n, c = int(torch.randint(5, 30, (1,), generator=g)), int(torch.randint(3, 9, (1,), generator=g))
        dist = torch.randint(0, 3, (n, c), generator=g).to(torch.float64)
        perm = torch.randperm(c, generator=g)
        n_seen = int(torch.randint(1, c, (1,), generator=g))
        seen, unseen = sorted(perm[:n_seen].tolist()), sorted(perm[n_seen:].tolist())
        columns = torch.randperm(c, generator=g).tolist()  # class id of each column
        labels = torch.randint(0, c, (n,), generator=g)
        betas = [0.0, 1.0, 2.0]  # integer betas keep calibrated ties exact
        s = gzsl_scores(dist, labels, seen, unseen, betas=betas, class_ids=columns)
        lab = labels.tolist()
        for k, b in enumerate(betas):
            preds = _naive_predictions(dist, seen, unseen, b, columns)
            seen_rows = [i for i in range(n) if lab[i] in seen]
            unseen_rows = [i for i in range(n) if lab[i] in unseen]
            exp_s = _per_class_mean([preds[i] for i in seen_rows], [lab[i] for i in seen_rows], seen)
            exp_u = _per_class_mean([preds[i] for i in unseen_rows], [lab[i] for i in unseen_rows], unseen)
            differences += abs(s.per_beta["S"][k] - 100 * exp_s) > 1e-9 or abs(s.per_beta["U"][k] - 100 * exp_u) > 1e-9
        zsl_preds = _naive_predictions(dist, [], unseen, 0.0, columns)
        unseen_rows = [i for i in range(n) if lab[i] in unseen]
        exp_zsl = _per_class_mean([zsl_preds[i] for i in unseen_rows], [lab[i] for i in unseen_rows], unseen)
        differences += abs(s.ZSL - 100 * exp_zsl) > 1e-9
        # how often the old seen-first order would have mattered: a row whose minimum (beta 0) is shared by
        # a seen and an unseen column with the unseen one first
        for i in range(n):
            row = [float(dist[i, j]) for j in range(c)]
            first = columns[row.index(min(row))]
            ties_between_seen_and_unseen += first in unseen and any(
                columns[j] in seen and row[j] == min(row) for j in range(c))
    assert differences == 0
    assert ties_between_seen_and_unseen > 100  # the matrices do exercise the case the fix is about


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


def test_a_class_with_two_columns_is_refused():
    with pytest.raises(ValueError, match=r"classes \[1\] have more than one distance column"):
        gzsl_scores(torch.zeros(2, 3), torch.tensor([0, 1]), [0], [1], betas=[0.0], class_ids=[0, 1, 1])


def test_the_grid_extends_until_the_best_hm_is_interior():
    from avgzsl.evaluation import calibrate

    # Seen classes 0, 1; unseen 2, 3. Seen samples: 0 to their class, 6 to the others (beta >= 6 loses them).
    # Unseen samples: `gap` closer to seen class 0 than to their own class, so beta > gap finds them.
    gaps = [1.0, 2.0, 2.9, 3.5, 4.5]
    rows, labels = [[0.0, 9.0, 6.0, 6.0], [9.0, 0.0, 6.0, 6.0]], [0, 1]
    for cls in (2, 3):
        for gap in gaps:
            row = [1.0, 9.0, 9.0, 9.0]
            row[cls] = 1.0 + gap
            rows.append(row)
            labels.append(cls)
    d, labels = torch.tensor(rows), torch.tensor(labels)
    grid = beta_grid(0.0, 3.0, 16)
    plain = calibrate(d, labels, [0, 1], [2, 3], grid)
    assert plain.beta == 3.0 and plain.U == 60.0  # HM still rising at the reference grid's edge
    wide = calibrate(d, labels, [0, 1], [2, 3], grid, extend=True)
    assert wide.beta == pytest.approx(4.6) and wide.HM == 100.0
    assert wide.per_beta["beta"][-1] > wide.beta  # the maximum is interior to the extended grid
    assert wide.per_beta["beta"][:16] == pytest.approx(grid.tolist())  # the same step, continued
    assert len(wide.per_beta["beta"]) == 31  # one extension was enough
    # a maximum already inside the reference grid keeps the reference grid
    near = calibrate(d - 2.0 * (labels[:, None] >= 2) * torch.tensor([0.0, 0.0, 1.0, 1.0]), labels, [0, 1], [2, 3],
                     grid, extend=True)
    assert near.per_beta["beta"] == pytest.approx(grid.tolist()) and near.beta < 3.0 and near.HM == 100.0


def test_details_give_per_class_accuracy_and_the_zsl_prediction_histogram():
    d = torch.tensor([[0.0, 5.0, 5.0, 5.0], [5.0, 5.0, 0.0, 1.0], [5.0, 5.0, 0.0, 1.0], [5.0, 5.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2, 3, 3])
    s = gzsl_scores(d, labels, [0, 1], [2, 3], [0.0])
    assert s.details["zsl_predictions"] == {2: 2, 3: 1}
    assert s.details["zsl_largest_share"] == pytest.approx(2 / 3)
    assert s.details["zsl_class_accuracy"] == {2: 100.0, 3: 50.0}
    assert s.details["class_accuracy"] == {0: 100.0, 2: 100.0, 3: 50.0}
    assert "details" not in s.to_dict() and "details" in s.to_dict(with_details=True)
