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

    def to_dict(self, with_grid: bool = False) -> dict:
        out = asdict(self)
        if not with_grid:
            out.pop("per_beta")
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
        unseen classes. All in percent. Ties in the argmin go to the lowest column.
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

    # Columns in search-space order: seen first, then unseen.
    col_of = {int(k): j for j, k in enumerate(ids.tolist())}
    cols = torch.tensor([col_of[int(k)] for k in space.tolist()], dtype=torch.long)
    d = distances[:, cols]
    n_seen = seen.numel()
    is_seen_sample = torch.isin(labels, seen)
    is_unseen_sample = ~is_seen_sample

    # Calibrated stacking over the whole grid at once, chunked over betas to bound memory.
    offsets = torch.zeros(space.numel(), dtype=torch.float64)
    offsets[:n_seen] = 1.0
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
        zsl_pred = unseen[torch.argmin(d[is_unseen_sample][:, n_seen:], dim=1)]
        zsl = _mean_class_accuracy((zsl_pred == labels[is_unseen_sample])[None], labels[is_unseen_sample], unseen)
        zsl_value = float(zsl[0])
    else:
        zsl_value = 0.0

    def pct(x: Tensor) -> float:
        return round(float(x) * 100.0, 10)

    return GZSLScores(
        S=pct(s[best]), U=pct(u[best]), HM=pct(hm[best]), ZSL=pct(zsl_value), beta=round(float(betas[best]), 10),
        per_beta={
            "beta": betas.tolist(),
            "S": (s * 100).tolist(), "U": (u * 100).tolist(), "HM": (hm * 100).tolist(),
        },
    )


def scores_at_beta(
    distances: Tensor, labels: Tensor, seen_classes, unseen_classes, beta: float, class_ids=None,
) -> GZSLScores:
    """Scores with a fixed, already chosen beta (the test phase uses stage 1's beta)."""
    return gzsl_scores(distances, labels, seen_classes, unseen_classes, [beta], class_ids)
