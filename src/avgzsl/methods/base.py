"""The method interface: everything the protocol runner calls on a method, and nothing more.

A method is an nn.Module built from a `DataDims` and its own config dataclass. The protocol
(`avgzsl.protocol`) trains it with `optimization_step`, scores it with `distances`, and logs
`epoch_diagnostics`; it never looks inside. Adding a method = one module in `avgzsl/methods/`
registered with `@register_method`, plus `configs/<dataset>/<name>.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from avgzsl.data.types import Batch, SampleSet


@dataclass(frozen=True)
class DataDims:
    """Shapes a method needs to build itself."""

    audio_dim: int
    video_dim: int
    text_dim: int
    temporal: bool = False


@dataclass
class OptimConfig:
    """Optimiser settings every method has (Adam, as all references use)."""

    lr: float = 1e-3
    weight_decay: float = 1e-5
    # Same Adam update, one fused kernel: ~8x faster than torch's default per-tensor loop on CPU
    # (14.8 -> 1.9 ms per AVCA step); false gives the default implementation.
    fused_adam: bool = True


def make_adam(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam with the config's lr / weight decay (fused unless cfg.fused_adam is false)."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_adam or None)


class Method(nn.Module):
    """Base class of every method.

    Subclasses set `Config` (a dataclass, usually extending OptimConfig) and implement
    `training_step` and either `distances` or the pair `embed_samples` / `embed_classes`.
    """

    Config: ClassVar[type] = OptimConfig
    #: whether the protocol must attach a negative batch (another class's sample and text) to each batch
    uses_negatives: ClassVar[bool] = False
    #: kinds of features the method takes: "averaged" (one vector per video, [B, D]) and/or "temporal"
    #: (per-second sequences, [B, T, D] with masks). A config asking for another kind is refused before
    #: any data loads.
    feature_kinds: ClassVar[tuple[str, ...]] = ("averaged",)
    #: methods fitted in closed form (the linear reference) set this: the protocol builds no optimiser and
    #: draws no batches, it calls `fit` once per "epoch" instead (see `fit`).
    closed_form: ClassVar[bool] = False

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Cross-field checks of a whole RunConfig, run when the config is built (before data loads).

        Raise `avgzsl.config.ConfigError` naming the keys. Single fields are already checked by their types.
        """

    #: methods that `avgzsl ablate --method <name>` adds as rows beside the variants (at their own configs)
    ablation_baselines: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def ablation_variants(cls) -> dict[str, dict]:
        """Named rows of the method's ablation table: {variant name: method-config overrides}.

        `avgzsl ablate --method <name>` runs them, in this order.
        """
        return {}

    @classmethod
    def default_class_embeddings(cls, cfg: Any) -> str:
        """data.class_embeddings ("text" or "ceo") for a RunConfig that leaves it unset (EZ-AVGZL: "ceo")."""
        return "text"

    def __init__(self, cfg: Any, dims: DataDims):
        super().__init__()
        self.cfg = cfg
        self.dims = dims

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        """Loss of one batch: {"loss": scalar tensor, other named scalar terms...}."""
        raise NotImplementedError

    @classmethod
    def stage_epochs(cls, cfg: Any) -> int:
        """Epochs of stage 1 for this RunConfig (closed-form methods: the number of candidate settings)."""
        return cfg.train.epochs

    def fit(self, samples: SampleSet, class_text: Tensor, epoch: int) -> dict[str, float]:
        """Closed-form methods only: fit on all of `samples` ([C_all, text_dim] `class_text`).

        `epoch` (1-based) indexes the method's candidate settings (e.g. a regularisation grid), so that
        stage 1 selects one on validation exactly as it selects an epoch, and stage 2 refits the chosen
        one on stage-2 train. Returns numbers for the epoch's metrics row.
        """
        raise NotImplementedError

    def configure_optimizer(self) -> torch.optim.Optimizer | None:
        return make_adam(self.parameters(), self.cfg)

    def optimization_step(self, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        """One update. Methods that modulate gradients (DAAN's CSGM) override this.

        Returns the loss terms, detached (the runner averages them per epoch without syncing each step).
        """
        optimizer.zero_grad(set_to_none=True)
        terms = self.training_step(batch)
        terms["loss"].backward()
        optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    def training_state(self) -> dict:
        """State a method carries from one training step to the next outside its parameters and buffers
        (DAAN: CSGM's V_o of the previous step), saved with each epoch's training state so that a resumed
        run continues exactly. Tensors, numbers, lists and dicts only."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore what `training_state` returned."""

    def epoch_diagnostics(self) -> dict[str, float]:
        """Extra per-epoch numbers for the run's metrics (and reset of their accumulators)."""
        return {}

    # --- scoring ----------------------------------------------------------------------------------
    def embed_samples(self, batch: Batch) -> Tensor:
        """[B, E] embedding of each sample, compared with `embed_classes` by L2 distance."""
        raise NotImplementedError

    def embed_classes(self, class_text: Tensor) -> Tensor:
        """[C, E] embedding of each class's text embedding."""
        raise NotImplementedError

    def distances(self, batch: Batch, class_text: Tensor, normalise: bool = False) -> Tensor:
        """[B, C] distance of every sample to every class (lower is closer).

        Default: plain L2 between sample and class embeddings (protocol.md section 4); normalise: between
        the L2-normalised embeddings (train.score_distance=cosine). Methods whose score is a similarity
        override this and return its negation (and take normalise=False only: `scores_by_embeddings`).
        """
        samples, classes = self.embed_samples(batch), self.embed_classes(class_text)
        if normalise:
            samples, classes = nn.functional.normalize(samples, dim=-1), nn.functional.normalize(classes, dim=-1)
        return torch.cdist(samples, classes)

    @classmethod
    def scores_by_embeddings(cls) -> bool:
        """Whether the method scores by the default `distances` (so train.score_distance applies to it)."""
        return cls.distances is Method.distances
