"""GZSL scoring, exactly as protocol.md section 4, vectorised over the whole calibration grid.

Public entry point: `gzsl_scores`. It takes a distance (or negated similarity) matrix, so any
model, ours or a user's, can be scored the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor


@dataclass
class GZSLScores:
    """Scores in percent. `per_beta` holds S, U, HM for every beta of the grid."""

    S: float
    U: float
    HM: float
    ZSL: float
    beta: float
    per_beta: dict[str, list[float]] = field(default_factory=dict)
    # At the chosen beta: accuracy (percent) of every class with samples, in the joint search space
    # ("class_accuracy", keyed by class id) and in the unseen-only space ("zsl_class_accuracy"); how many
    # unseen samples the ZSL search predicts as each unseen class ("zsl_predictions") and the largest share
    # of them on one class ("zsl_largest_share", 1/U when predictions spread evenly: a hub shows here).
    details: dict = field(default_factory=dict)

    def to_dict(self, with_grid: bool = False, with_details: bool = False) -> dict:
        out = asdict(self)
        if not with_grid:
            out.pop("per_beta")
        if not with_details:
            out.pop("details")
        return out


def beta_grid(start: float = 0.0, stop: float = 3.0, num: int = 16) -> Tensor:
    """The calibration grid, linspace(start, stop, num) (AVCA/TCaF: 0..3 in 16 steps)."""
    return torch.linspace(float(start), float(stop), int(num), dtype=torch.float64)


def _mean_class_accuracy(correct: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """Mean over `classes` that have samples of the per-class accuracy; correct is [G, N] bool.

    Classes without a single sample are left out of the mean (they have no accuracy), as the
    reference does by averaging over the labels present. Returns [G] in [0, 1]; 0 if no class has samples.
    """
    n_cls = int(classes.numel())
    if n_cls == 0 or labels.numel() == 0:
        return torch.zeros(correct.shape[0], dtype=torch.float64)
    # position of each sample's label among `classes` (labels are known to be in `classes`)
    order = torch.argsort(classes)
    pos = order[torch.searchsorted(classes[order], labels)]
    counts = torch.bincount(pos, minlength=n_cls).to(torch.float64)
    hits = torch.zeros(correct.shape[0], n_cls, dtype=torch.float64)
    hits.index_add_(1, pos, correct.to(torch.float64))
    present = counts > 0
    return (hits[:, present] / counts[present]).mean(dim=1)


def _class_accuracy(correct: Tensor, labels: Tensor) -> dict[int, float]:
    """{class id: percent correct} over the classes present in labels; correct is [N] bool."""
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    hits = torch.zeros(classes.numel(), dtype=torch.float64).index_add_(0, inverse, correct.to(torch.float64))
    return {int(c): round(float(h / n) * 100.0, 6) for c, h, n in zip(classes, hits, counts)}


def gzsl_scores(
    distances: Tensor,
    labels: Tensor,
    seen_classes: Tensor | list[int],
    unseen_classes: Tensor | list[int],
    betas: Tensor | list[float] | None = None,
    class_ids: Tensor | list[int] | None = None,
) -> GZSLScores:
    """S, U, HM (best calibration) and ZSL of N samples scored against C classes.

    Args:
        distances: [N, C] distance of each sample to each class (lower = closer). Methods that
            output similarities pass their negation.
        labels: [N] class of each sample, in the same id space as `class_ids`.
        seen_classes, unseen_classes: class ids of the phase's seen and unseen classes. Together
            they are the search space: columns whose class is in neither are ignored.
        betas: calibration grid; beta is added to the distance of every seen class before the
            argmin. Default: linspace(0, 3, 16).
        class_ids: class id of each column (default: column j is class j).

    Returns:
        GZSLScores with S = mean per-class accuracy over seen classes and U over unseen classes,
        both in the joint search space at the beta that maximises HM = 2SU/(S+U) (the first such beta
        on ties); ZSL = mean per-class accuracy of unseen samples with the search space restricted to
        unseen classes. All in percent. Ties in the argmin go to the lowest input column of `distances`
        among the columns searched (seen or unseen alike; for ZSL, among the unseen columns).
    """
    distances = torch.as_tensor(distances).detach().to("cpu", torch.float64)
    labels = torch.as_tensor(labels).detach().to("cpu", torch.long)
    seen = torch.as_tensor(seen_classes, dtype=torch.long).flatten()
    unseen = torch.as_tensor(unseen_classes, dtype=torch.long).flatten()
    betas = beta_grid() if betas is None else torch.as_tensor(betas, dtype=torch.float64).flatten()
    n, c = distances.shape
    if labels.shape != (n,):
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected ({n},) to match distances {tuple(distances.shape)}")
    ids = torch.arange(c) if class_ids is None else torch.as_tensor(class_ids, dtype=torch.long).flatten()
    if ids.numel() != c:
        raise ValueError(f"class_ids has {ids.numel()} entries for {c} distance columns")
    if torch.isin(seen, unseen).any():
        raise ValueError(f"classes {seen[torch.isin(seen, unseen)].tolist()} are both seen and unseen")
    space = torch.cat([seen, unseen])
    missing = space[~torch.isin(space, ids)]
    if missing.numel():
        raise ValueError(f"classes {missing.tolist()} of the search space have no distance column")
    stray = labels[~torch.isin(labels, space)]
    if stray.numel():
        raise ValueError(f"sample labels {sorted(set(stray.tolist()))} are outside the search space (seen + unseen)")

    # The search space's columns kept in input column order (not seen-first): torch.argmin returns the
    # first minimum, so a tie goes to the lowest input column whether that class is seen or unseen.
    in_space = torch.isin(ids, space)
    repeated = ids[in_space].unique(return_counts=True)
    if (repeated[1] > 1).any():
        raise ValueError(f"classes {repeated[0][repeated[1] > 1].tolist()} have more than one distance column")
    cols = torch.nonzero(in_space).flatten()  # ascending
    space = ids[cols]  # class of each kept column, in input order
    d = distances[:, cols]
    col_is_seen = torch.isin(space, seen)
    is_seen_sample = torch.isin(labels, seen)
    is_unseen_sample = ~is_seen_sample

    # Calibrated stacking over the whole grid at once, chunked over betas to bound memory.
    offsets = col_is_seen.to(torch.float64)
    chunk = max(1, int(2**25 // max(1, n * space.numel())))
    preds = []
    for start in range(0, betas.numel(), chunk):
        b = betas[start : start + chunk]
        preds.append(torch.argmin(d[None] + b[:, None, None] * offsets[None, None], dim=2))
    pred_cls = space[torch.cat(preds)]  # [G, N]
    correct = pred_cls == labels[None]
    s = _mean_class_accuracy(correct[:, is_seen_sample], labels[is_seen_sample], seen)
    u = _mean_class_accuracy(correct[:, is_unseen_sample], labels[is_unseen_sample], unseen)
    hm = torch.where(s + u > 0, 2 * s * u / (s + u).clamp_min(1e-300), torch.zeros_like(s))
    best = int(torch.argmax(hm))  # argmax returns the first maximum

    if unseen.numel() and is_unseen_sample.any():
        unseen_cols = ~col_is_seen  # unseen columns, still in input order: ties break the same way
        zsl_pred = space[unseen_cols][torch.argmin(d[is_unseen_sample][:, unseen_cols], dim=1)]
        zsl_correct = zsl_pred == labels[is_unseen_sample]
        zsl = _mean_class_accuracy(zsl_correct[None], labels[is_unseen_sample], unseen)
        zsl_value = float(zsl[0])
        hits = (zsl_pred[:, None] == unseen[None]).sum(0)
        details = {
            "zsl_class_accuracy": _class_accuracy(zsl_correct, labels[is_unseen_sample]),
            "zsl_predictions": {int(c): int(k) for c, k in zip(unseen, hits)},
            "zsl_largest_share": round(float(hits.max()) / int(is_unseen_sample.sum()), 6),
        }
    else:
        zsl_value, details = 0.0, {}
    details["class_accuracy"] = _class_accuracy(correct[best], labels) if n else {}

    def pct(x: Tensor) -> float:
        return round(float(x) * 100.0, 10)

    return GZSLScores(
        S=pct(s[best]), U=pct(u[best]), HM=pct(hm[best]), ZSL=pct(zsl_value), beta=round(float(betas[best]), 10),
        per_beta={
            "beta": betas.tolist(),
            "S": (s * 100).tolist(), "U": (u * 100).tolist(), "HM": (hm * 100).tolist(),
        },
        details=details,
    )


def calibrate(
    distances: Tensor, labels: Tensor, seen_classes, unseen_classes, betas: Tensor, class_ids=None,
    extend: bool = False, max_extensions: int = 8,
) -> GZSLScores:
    """`gzsl_scores` over the grid `betas`; with `extend`, while the best HM sits at the top of the grid,
    the grid goes on with the same step (one more grid length each time, at most `max_extensions` times),
    so that the data, not the grid's edge, decides beta. A best HM inside the reference grid keeps it."""
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    scores = gzsl_scores(distances, labels, seen_classes, unseen_classes, betas, class_ids)
    if not extend or betas.numel() < 2:
        return scores
    step = float(betas[1] - betas[0])
    for _ in range(max_extensions):
        if scores.beta < float(betas[-1]) or scores.HM == 0.0 or step <= 0:
            break
        more = betas[-1] + step * torch.arange(1, betas.numel(), dtype=torch.float64)
        betas = torch.cat([betas, more])
        scores = gzsl_scores(distances, labels, seen_classes, unseen_classes, betas, class_ids)
    return scores


def scores_at_beta(
    distances: Tensor, labels: Tensor, seen_classes, unseen_classes, beta: float, class_ids=None,
) -> GZSLScores:
    """Scores with a fixed, already chosen beta (the test phase uses stage 1's beta)."""
    return gzsl_scores(distances, labels, seen_classes, unseen_classes, [beta], class_ids)
