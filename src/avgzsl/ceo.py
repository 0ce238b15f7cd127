"""Class embedding optimisation (CEO, EZ-AVGZL: Mo & Morgado, ECCV 2024), a data step every method can use.

Class-name embeddings carry the right semantics but crowd together; CEO moves them apart while keeping
the ranking of their distances. It runs once, over all classes (the names of unseen classes are known at
training time), before any training:

    w_c = t_c / ||t_c||, then minimise (1 - alpha) L_rank + alpha L_sep by Adam, renormalising after each step
    L_sep  = - sum_c min_{k != c} ||w_c - w_k||           (push each class from its nearest neighbour)
    L_rank = sum_c sum_{i != c} sum_{j != c, i} max(0, m - sign(d^t_ci - d^t_cj) (d^w_ci - d^w_cj))

with d^t the distances between the original text embeddings and d^w between the new ones (baselines.md,
EZ-AVGZL). Every choice the paper does not state is a `CEOConfig` field (avgzsl.config) marked "ours":
the margin, steps, learning rate and renormalisation (the spec's suggested defaults), and the reduction:
each term is a *mean* over its terms by default, because with the literal sums L_rank has ~C^2 times more
terms than L_sep and on the real UCF text CEO then lowers the minimum nearest-neighbour distance instead of
raising it (measured: 0.468 -> 0.416); `reduction="sum"` gives the literal formula.

Vectorisation: L_rank is cubic in the number of classes (UCF 101: 1.0 M triplets; ActivityNet 200: 7.9 M;
VGGSound 309: 29 M). When the full set has at most `exact_triplets` terms, every triplet is used, computed in
blocks of anchors c ([block, C, C] tensors, signs computed once; no loop over triplets); otherwise each step
draws about `sampled_triplets` triplets: for every anchor a uniformly random set of other classes and every
pair (i, j) in it (an unbiased estimate of the mean, dense [C, size, size] tensors), from a generator seeded
by `seed`. With the defaults,
UCF is exact and ActivityNet and VGGSound are sampled.

What this module owns: the CEO objective and optimiser (`optimise_class_embeddings`), its figures (minimum
and mean nearest-neighbour distance before and after, Spearman correlation of old and new pairwise
distances, seconds), its disk cache (`ceo`: keyed by the text embeddings and every setting), applying it
to a loaded benchmark (`apply_class_embeddings`, called by `avgzsl.data.loading.load_benchmark` when
`data.class_embeddings` is "ceo"), and reading a benchmark's class text for `avgzsl ceo` (`class_text`).

Cache folder: <data.cache_dir>/ceo when data.cache_dir is set, else $AVGZSL_CACHE_DIR/ceo, else
$XDG_CACHE_HOME/avgzsl/ceo (default ~/.cache/avgzsl/ceo): independent of any run, so every run and method on
the same text and settings shares one optimisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from avgzsl.config import CEOConfig, DataConfig
from avgzsl.data.types import Benchmark

LOG = logging.getLogger("avgzsl")

__all__ = ["CEOConfig", "CEOResult", "ExactRankLoss", "apply_class_embeddings", "ceo", "ceo_cache_key",
           "class_text", "default_cache_dir", "nearest_neighbour_distances", "optimise_class_embeddings",
           "pairwise_distances", "rank_loss", "sample_triplets", "separation_loss", "spearman", "triplet_set_size"]

CACHE_FORMAT_VERSION = 1
# elements of one [block, C, C] tensor of the exact rank loss (bounds its memory, ~16 MB per float tensor)
_BLOCK_ELEMENTS = 4_000_000


@dataclass
class CEOResult:
    """Optimised class embeddings [C, D] (rows in the input's order) and CEO's figures."""

    embeddings: Tensor
    figures: dict = field(default_factory=dict)


# --- distances and figures ---------------------------------------------------------------------------------
def pairwise_distances(x: Tensor) -> Tensor:
    """[C, C] Euclidean distances between rows, differentiable everywhere (the diagonal is ~1e-6, not 0)."""
    sq = x.pow(2).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(1e-12).sqrt()


def nearest_neighbour_distances(x: Tensor) -> Tensor:
    """[C] distance of each row to its nearest other row."""
    d = pairwise_distances(x.double())
    return d.masked_fill(torch.eye(len(x), dtype=torch.bool), float("inf")).amin(1)


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 of x (float64), ties sharing their average rank."""
    sorted_x, order = torch.sort(x)
    new = torch.ones_like(sorted_x, dtype=torch.bool)
    new[1:] = sorted_x[1:] != sorted_x[:-1]
    group = torch.cumsum(new, 0) - 1
    first = torch.nonzero(new).squeeze(1).double()
    counts = torch.diff(torch.cat([first, torch.tensor([float(len(x))], dtype=torch.float64)]))
    ranks = torch.empty(len(x), dtype=torch.float64)
    ranks[order] = (first + (counts - 1) / 2)[group]
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two equally long vectors (ties get average ranks)."""
    ra, rb = _average_ranks(a.reshape(-1).double()), _average_ranks(b.reshape(-1).double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-300))


def _figures(text: Tensor, new: Tensor) -> dict:
    """Nearest-neighbour separation before (on text / ||text||, where CEO starts) and after, and the Spearman
    correlation between the original text's pairwise distances and the new ones (each unordered pair once)."""
    start = F.normalize(text.double(), dim=1)
    before, after = nearest_neighbour_distances(start), nearest_neighbour_distances(new.double())
    iu = torch.triu_indices(len(text), len(text), 1)
    old_d = pairwise_distances(text.double())[iu[0], iu[1]]
    new_d = pairwise_distances(new.double())[iu[0], iu[1]]
    return {
        "min_nn_before": float(before.min()), "min_nn_after": float(after.min()),
        "mean_nn_before": float(before.mean()), "mean_nn_after": float(after.mean()),
        "spearman": spearman(old_d, new_d),
    }


# --- the two terms ---------------------------------------------------------------------------------------
def separation_loss(dist: Tensor, reduction: str = "mean") -> Tensor:
    """L_sep = - sum (or mean) over classes of the distance to the nearest other class."""
    eye = torch.eye(len(dist), dtype=torch.bool, device=dist.device)
    nn_dist = dist.masked_fill(eye, float("inf")).amin(1)
    return -(nn_dist.mean() if reduction == "mean" else nn_dist.sum())


def n_triplets(n_classes: int) -> int:
    """Number of ordered triplets (c, i, j) with i != c, j != c, i != j."""
    return n_classes * (n_classes - 1) * (n_classes - 2)


def sample_triplets(n_classes: int, size: int, generator: torch.Generator) -> Tensor:
    """For every anchor c, a uniformly random set of `size` distinct other classes: [n_classes, size] (row c).

    The rank term then uses every ordered pair (i, j), i != j, of row c's set: size * (size - 1) triplets per
    anchor, every anchor the same number. Each triplet of an anchor is equally likely to be drawn, so the
    mean over the drawn triplets is an unbiased estimate of the mean over all of them, computed by dense
    [C, size, size] tensors (no per-triplet index arithmetic).
    """
    if not 2 <= size <= n_classes - 1:
        raise ValueError(f"a set of {size} other classes needs 2 <= size <= n_classes - 1 = {n_classes - 1}")
    keys = torch.rand(n_classes, n_classes, generator=generator)
    keys.fill_diagonal_(2.0)  # never the anchor itself
    return keys.topk(size, dim=1, largest=False).indices


def triplet_set_size(n_classes: int, triplets: int) -> int:
    """Size of each anchor's set so that the C * size * (size - 1) triplets of a step are about `triplets`."""
    per_anchor = triplets / n_classes
    size = round((1.0 + (1.0 + 4.0 * per_anchor) ** 0.5) / 2.0)
    return int(min(max(size, 2), n_classes - 1))


class ExactRankLoss:
    """L_rank over every triplet, for a fixed d^t: the sign of each triplet is computed once, in blocks of
    anchors c ([block, C, C] tensors), with 0 at the invalid entries (i = c, j = c or i = j), whose constant
    term m is subtracted instead of masked at every step."""

    def __init__(self, dist_old: Tensor, margin: float):
        n = len(dist_old)
        self.n, self.margin = n, float(margin)
        block = max(1, _BLOCK_ELEMENTS // max(1, n * n))
        eye = torch.eye(n, dtype=torch.bool, device=dist_old.device)
        self.blocks: list[tuple[Tensor, Tensor, int]] = []  # (anchors, sign [b, C, C], invalid entries)
        for start in range(0, n, block):
            anchors = torch.arange(start, min(n, start + block), device=dist_old.device)
            dt = dist_old[anchors]
            other = ~eye[anchors]  # [b, C]: i != c
            valid = other[:, :, None] & other[:, None, :] & ~eye[None]  # i != c, j != c, i != j
            sign = torch.sign(dt[:, :, None] - dt[:, None, :]).masked_fill(~valid, 0.0).to(dist_old.dtype)
            self.blocks.append((anchors, sign, int((~valid).sum())))

    def __call__(self, dist_new: Tensor, reduction: str = "mean") -> Tensor:
        total = dist_new.new_zeros(())
        for anchors, sign, n_invalid in self.blocks:
            dw = dist_new[anchors]
            total = total + (self.margin - sign * (dw[:, :, None] - dw[:, None, :])).clamp_min(0).sum() \
                - self.margin * n_invalid
        return total / n_triplets(self.n) if reduction == "mean" else total


def rank_loss(dist_new: Tensor, dist_old: Tensor, margin: float, subsets: Tensor | None = None,
              reduction: str = "mean") -> Tensor:
    """L_rank over every triplet (subsets=None: `ExactRankLoss`), or over the triplets (c, i, j) with i != j
    both in row c of `subsets` ([C, size] other classes per anchor, as `sample_triplets` draws them).

    Each term is max(0, m - sign(d^t_ci - d^t_cj) (d^w_ci - d^w_cj)); a tie in d^t gives the constant m.
    reduction "mean": the mean over the triplets used (all, or the subsets'); "sum": the sum over all
    triplets (with subsets: their mean times the number of all triplets, an unbiased estimate).
    """
    if subsets is None:
        return ExactRankLoss(dist_old, margin)(dist_new, reduction)
    n, size = subsets.shape
    dw, dt = dist_new.gather(1, subsets), dist_old.gather(1, subsets)  # [C, size]
    sign = torch.sign(dt[:, :, None] - dt[:, None, :])  # 0 on the diagonal i = j
    terms = (margin - sign * (dw[:, :, None] - dw[:, None, :])).clamp_min(0)
    mean = (terms.sum() - margin * n * size) / (n * size * (size - 1))  # minus the diagonal's constant terms
    return mean if reduction == "mean" else mean * n_triplets(len(dist_new))


# --- the optimisation -------------------------------------------------------------------------------------
def optimise_class_embeddings(text: Tensor, settings: CEOConfig | None = None) -> CEOResult:
    """CEO of `text` [C, D] (all classes), not cached: see `ceo` for the cached form.

    Deterministic for settings.seed (fixed start, Adam, seeded triplet draws; float32 on CPU).
    """
    s = settings or CEOConfig()
    text = text.detach().float().cpu()
    n = len(text)
    if n < 3:
        raise ValueError(f"CEO needs at least 3 classes, got {n}")
    w = F.normalize(text, dim=1).clone().requires_grad_(True)
    # built before the clock starts: torch's first Adam in a process imports its compiler machinery (~5 s)
    opt = torch.optim.Adam([w], lr=s.lr)
    t0 = time.perf_counter()
    dist_old = pairwise_distances(text.double()).float()
    exact = ExactRankLoss(dist_old, s.margin) if n_triplets(n) <= s.exact_triplets else None
    size = triplet_set_size(n, s.sampled_triplets)
    generator = torch.Generator().manual_seed(s.seed)
    l_rank = l_sep = torch.zeros(())
    for _ in range(s.steps):
        dist = pairwise_distances(w)
        if exact is not None:
            l_rank = exact(dist, s.reduction)
        else:
            l_rank = rank_loss(dist, dist_old, s.margin, sample_triplets(n, size, generator), s.reduction)
        l_sep = separation_loss(dist, s.reduction)
        loss = (1.0 - s.alpha) * l_rank + s.alpha * l_sep
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s.renormalise:
            with torch.no_grad():
                w.copy_(F.normalize(w, dim=1))
    new = w.detach().clone()
    figures = _figures(text, new)
    figures.update({
        "seconds": round(time.perf_counter() - t0, 3),
        "triplets": "all" if exact is not None else "sampled",
        "triplets_per_step": n_triplets(n) if exact is not None else n * size * (size - 1),
        "final_rank_loss": float(l_rank.detach()), "final_sep_loss": float(l_sep.detach()),
    })
    return CEOResult(new, figures)


# --- cache -----------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """$AVGZSL_CACHE_DIR/ceo, else $XDG_CACHE_HOME/avgzsl/ceo, else ~/.cache/avgzsl/ceo."""
    if os.environ.get("AVGZSL_CACHE_DIR"):
        return Path(os.environ["AVGZSL_CACHE_DIR"]).expanduser() / "ceo"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "avgzsl" / "ceo"


def ceo_cache_key(text: Tensor, settings: CEOConfig) -> str:
    """sha256 of the text embeddings (shape and float32 bytes) and every CEO setting."""
    h = hashlib.sha256()
    arr = text.detach().float().cpu().contiguous().numpy()
    h.update(json.dumps({"format": CACHE_FORMAT_VERSION, "shape": list(arr.shape),
                         "settings": dataclasses.asdict(settings)}, sort_keys=True).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def ceo(text: Tensor, settings: CEOConfig | None = None, cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True) -> CEOResult:
    """CEO of `text` [C, D], cached under cache_dir (default: `default_cache_dir()`).

    A hit returns the stored embeddings and figures, with figures["cache_hit"] True (its "seconds" are
    those of the original optimisation, "load_seconds" those of the hit); a corrupt or foreign file is
    recomputed and replaced.
    """
    s = settings or CEOConfig()
    key = ceo_cache_key(text, s)
    path = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / f"ceo-{key[:24]}.pt"
    t0 = time.perf_counter()
    if use_cache and path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("key") == key and state.get("format") == CACHE_FORMAT_VERSION:
                figures = dict(state["figures"], cache_hit=True, cache_path=str(path), key=key,
                               load_seconds=round(time.perf_counter() - t0, 3))
                return CEOResult(state["embeddings"], figures)
        except Exception as exc:  # noqa: BLE001  (corrupt or foreign file: recompute it)
            LOG.warning("ignoring unreadable CEO cache %s (%s: %s)", path, type(exc).__name__, exc)
    result = optimise_class_embeddings(text, s)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            torch.save({"key": key, "format": CACHE_FORMAT_VERSION, "embeddings": result.embeddings,
                        "figures": result.figures}, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    result.figures.update(cache_hit=False, cache_path=str(path) if use_cache else None, key=key)
    return result


def _cache_dir_of(cfg: DataConfig) -> Path | None:
    return Path(cfg.cache_dir).expanduser() / "ceo" if cfg.cache_dir else None


# --- benchmarks ------------------------------------------------------------------------------------------
def apply_class_embeddings(bench: Benchmark, cfg: DataConfig) -> Benchmark:
    """The benchmark with the class embeddings `cfg.class_embeddings` asks for, recorded in its info.

    "text" (or unset): the benchmark as it is. "ceo": a new Benchmark sharing the phases, whose `text`
    ([C_all, D], every method's and the scorer's class table) is CEO's output on all classes, and whose
    info holds CEO's figures as flat scalar keys (so that results.json["data"] keeps them).
    """
    mode = cfg.class_embeddings or "text"
    if mode == "text":
        bench.info["class_embeddings"] = "text"
        return bench
    if mode != "ceo":
        raise ValueError(f"data.class_embeddings must be 'text' or 'ceo', got {mode!r}")
    result = ceo(bench.text, cfg.ceo, _cache_dir_of(cfg))
    f = result.figures
    LOG.info("CEO on %d classes of %s: min NN %.3f -> %.3f, mean NN %.3f -> %.3f, Spearman %.3f (%s, %.1f s)",
             len(bench.text), bench.name, f["min_nn_before"], f["min_nn_after"], f["mean_nn_before"],
             f["mean_nn_after"], f["spearman"], "cached" if f["cache_hit"] else "computed", f["seconds"])
    info = dict(bench.info, class_embeddings="ceo")
    info.update({f"ceo_{k}": v for k, v in f.items()
                 if k in ("min_nn_before", "min_nn_after", "mean_nn_before", "mean_nn_after", "spearman",
                          "seconds", "cache_hit", "triplets", "key")})
    return dataclasses.replace(bench, text=result.embeddings.to(bench.text.dtype), info=info)


def class_text(cfg: DataConfig, like: str | None = None) -> tuple[list[str], Tensor]:
    """(class names, [C_all, D] text table) of a benchmark folder (cfg.root) or a packaged benchmark (`like`),
    by name (or the legacy order with cfg.legacy_text_order), without reading any feature file."""
    from avgzsl.data.classes import find_text_file, load_class_table, load_text_embeddings, text_table

    if like is not None:
        from avgzsl.data import packaged

        meta = packaged.load(like)
        table = meta.class_table()
        text = text_table(table, meta.text, cfg.legacy_text_order, f"packaged {meta.dataset} text")
        return list(table.names), text
    if not cfg.root:
        raise ValueError("no benchmark given: pass --root <dataset folder> or --like UCF|ActivityNet|VGGSound")
    root = Path(cfg.root).expanduser()
    if not (root / "class-split").is_dir():
        raise FileNotFoundError(f"not a benchmark folder: {root} has no class-split/")
    table = load_class_table(root, cfg.dataset)
    path = find_text_file(root, cfg.dataset, cfg.feature_set, bool(cfg.temporal))
    return list(table.names), text_table(table, load_text_embeddings(path), cfg.legacy_text_order, str(path))
