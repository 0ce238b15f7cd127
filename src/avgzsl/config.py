"""Typed run configuration: dataclasses, per dataset x method YAML files, key=value overrides.

A run's config has three sections:
  data:   which benchmark and how to read it (DataConfig)
  train:  the protocol's settings, shared by every method (TrainConfig)
  method: the method's own dataclass (its `Config`), e.g. dropouts, loss options, lr
YAML files under `avgzsl/configs/<dataset>/<method>.yaml` hold the reference hyper-parameters;
`section.key=value` overrides are parsed as YAML scalars and type-checked against the dataclass,
and an unknown key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
DATASETS = ("UCF", "ActivityNet", "VGGSound")


class YAMLLoader(yaml.SafeLoader):
    """SafeLoader closer to YAML 1.2: only true/false are booleans (so `csgm: off` stays the string "off"),
    and 1e-3 (exponent, no dot) is a float, not a string."""


YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
YAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def load_yaml_text(text) -> Any:
    """Parse YAML (a string or a stream) with `YAMLLoader`: configs, overrides and saved run configs alike."""
    return yaml.load(text, Loader=YAMLLoader)


@dataclass
class CEOConfig:
    """Class embedding optimisation (EZ-AVGZL; the algorithm is avgzsl.ceo). The paper gives alpha only;
    every other default is ours (the spec's suggested values where it suggests one)."""

    alpha: float = 0.5  # (1 - alpha) L_rank + alpha L_sep (the paper's alpha)
    margin: float = 0.1  # ours: m of the rank hinge
    steps: int = 1000  # ours: Adam steps
    lr: float = 1e-3  # ours: Adam learning rate
    renormalise: bool = True  # ours: project every embedding back onto the unit sphere after each step
    # ours: "mean" averages each term over its terms; "sum" is the paper's formula, where L_rank's C^3 terms
    # outweigh L_sep's C terms ~C^2 times (on UCF's text the minimum NN distance then falls instead of rising)
    reduction: Literal["mean", "sum"] = "mean"
    # ours: every rank triplet while there are at most this many (UCF's 101 classes: 999,900), else
    # sampled_triplets drawn per step (ActivityNet: 7.9 M, VGGSound: 29 M triplets)
    exact_triplets: int = 1_000_000
    sampled_triplets: int = 1_000_000
    seed: int = 0  # triplet sampling


@dataclass
class DataConfig:
    """Where the benchmark is and how to read it."""

    dataset: str = "UCF"
    root: str = ""  # the dataset folder holding class-split/ and features/
    # main (SeLaVi 512/512), cls (VGGish 128 / C3D 4096), or the name of your own <name>_features folder
    feature_set: str = "main"
    split: Literal["main_split", "cls_split"] = "main_split"
    # per-second (TCaF) features instead of averaged (AVCA); unset: the method's preferred kind (the first of
    # its feature_kinds), resolved when the config is built
    temporal: bool | None = None
    legacy_text_order: bool = False  # reproduce the reference loaders' text misalignment
    cache_dir: str | None = None
    # the class embeddings every method trains on and is scored with: the text embeddings, or CEO's
    # optimisation of them (data.ceo); unset: the method's choice (ezavgzl: ceo unless method.ceo=false;
    # every other method: text), resolved when the config is built
    class_embeddings: Literal["text", "ceo"] | None = None
    ceo: CEOConfig = field(default_factory=CEOConfig)
    # z-score every audio and video feature dimension with stage-1 train's mean and std before any method sees
    # them (the linear reference does this itself). Off: the features as the benchmark ships them, as every
    # reference does. A linear-gap probe (issue 12): README "The linear gap".
    standardise: bool = False


@dataclass
class TrainConfig:
    """The two-stage protocol's settings (protocol.md section 5)."""

    epochs: int = 50
    n_batches: int = 500  # class-balanced batches, drawn with replacement, per epoch
    batch_size: int = 256
    lr_patience: int = 3  # ReduceLROnPlateau(mode=max) on stage-1 val HM
    lr_factor: float = 0.1  # 1.0 = no plateau schedule: a constant learning rate
    # Stage 2 has no clean validation set. "replay" re-uses stage 1's learning rate of each epoch, so both
    # stages run the same schedule; "reference" steps the scheduler on the HM of the (trained-on) stage-1
    # val split, as the reference code does.
    stage2_lr: Literal["replay", "reference"] = "replay"
    beta_grid: list[float] = field(default_factory=lambda: [0.0, 3.0, 16.0])  # linspace(start, stop, num)
    # Extend the grid with its own step while the best val HM sits at its top (up to 9x its length), so that
    # the data, not the grid's edge, picks beta. Off: the reference grid, as AVCA and TCaF.
    beta_extend: bool = False
    # Scoring only (training is untouched): "l2" compares sample and class embeddings by L2, as every
    # reference; "cosine" L2-normalises both first (a linear-gap probe, issue 12). Methods with their own
    # distances (CJME, AVGZSLNet, EZ-AVGZL) take "l2" only.
    score_distance: Literal["l2", "cosine"] = "l2"
    eval_batch_size: int = 4096
    # "best" (stage-1 best + stage-2 test model), "all" (every epoch) or "none"
    save_checkpoints: Literal["best", "all", "none"] = "best"
    device: str = "cpu"
    num_threads: int = 0  # 0 = torch's default
    progress: bool = True


@dataclass
class RunConfig:
    method_name: str = "avca"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: Any = None  # the method's Config dataclass instance

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) `value` against the annotation `tp`."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices and not (isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return update_dataclass(tp(), value, where)
    return value


def update_dataclass(obj: Any, values: dict, where: str) -> Any:
    """Set the fields of `obj` from `values`, type-checked; unknown keys raise ConfigError."""
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}.{key}; valid keys: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            update_dataclass(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))
    return obj


def parse_overrides(items: list[str]) -> dict:
    """['train.epochs=15', 'method.dropout=0.1'] -> nested dict, values parsed as YAML scalars."""
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r}: the key must name a section, e.g. train.epochs=15"
                              + (" (the seed is --seed / --seeds)" if key.strip() == "seed" else ""))
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = load_yaml_text(raw) if raw.strip() else ""
    return tree


def presets() -> list[str]:
    """Names of the packaged presets (configs/presets/<name>.yaml), usable as `--config <name>`."""
    return sorted(p.stem for p in (CONFIG_DIR / "presets").glob("*.yaml"))


def resolve_config_file(config_file: str | Path) -> Path:
    """A YAML file's path, or a packaged preset's name (e.g. daan_md) turned into its path."""
    path = Path(config_file)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in str(config_file):
        return path
    preset = CONFIG_DIR / "presets" / f"{config_file}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"config file not found: {config_file} (nor a packaged preset; presets: {', '.join(presets())})")


def default_config_path(dataset: str, method: str) -> Path:
    return CONFIG_DIR / dataset / f"{method}.yaml"


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(
    method: str,
    dataset: str,
    overrides: list[str] | dict | None = None,
    config_file: str | Path | None = None,
) -> RunConfig:
    """Resolve a run's config: dataclass defaults < configs/<dataset>/<method>.yaml < config_file < overrides.

    A YAML file may hold a `by_feature_set: {cls: {...}}` section: the settings for that feature set,
    applied over the file's own when the resolved `data.feature_set` is that set (the references tune
    their hyper-parameters per feature set).
    """
    from avgzsl.methods import get_method

    method_cls = get_method(method)
    cfg = RunConfig(method_name=method, method=method_cls.Config())
    cfg.data.dataset = dataset
    layers: list[tuple[dict, dict]] = []  # (settings, by_feature_set overlays) per source, lowest first
    path = default_config_path(dataset, method)
    if path.exists():
        layers.append(_split_feature_sets(_load_yaml(path), path))
    if config_file is not None:
        config_file = resolve_config_file(config_file)
        layers.append(_split_feature_sets(_load_yaml(config_file), config_file))
    if overrides:
        layers.append((parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides), {}))
    flat: dict = {}
    for settings, _ in layers:
        flat = _merge(flat, settings)
    feature_set = flat.get("data", {}).get("feature_set", cfg.data.feature_set) if isinstance(flat.get("data"), dict) \
        else cfg.data.feature_set
    tree: dict = {}
    for settings, by_set in layers:
        tree = _merge(_merge(tree, settings), by_set.get(feature_set, {}))
    return check_config(apply_tree(cfg, tree))


def _check_device(device: str) -> None:
    """train.device names a device torch knows and this machine has (else the run would fail after it started)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"train.device: {device!r} is not a torch device; use cpu, cuda, cuda:<index> or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device} but this torch has no usable CUDA device; set train.device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={device} but there are {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={device} but MPS is not available here; set train.device=cpu")


def _check_method_ranges(cfg: RunConfig) -> None:
    """The ranges every method config shares by naming convention: *dropout in [0, 1), lr > 0, weight_decay >= 0."""
    m = cfg.method
    if m is None or not dataclasses.is_dataclass(m):
        return
    for f in dataclasses.fields(m):
        value = getattr(m, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # None (= another field's value) and non-numbers are the method's own business
        if f.name.endswith("dropout") and not 0.0 <= value < 1.0:
            raise ConfigError(f"method.{f.name} is a dropout probability, in [0, 1); got {value}")
        if f.name == "lr" and not value > 0:
            raise ConfigError(f"method.lr must be > 0, got {value}")
        if f.name == "weight_decay" and value < 0:
            raise ConfigError(f"method.weight_decay must be >= 0, got {value}")


def check_config(cfg: RunConfig) -> RunConfig:
    """Checks that need several fields, run when a config is built (before any data loads).

    Single fields are checked by their type annotations (`Literal` choices, numbers); this adds
    ranges, the feature kind the method takes, and the method's own cross-field checks.
    """
    from avgzsl.methods import get_method

    t = cfg.train
    for key in ("epochs", "n_batches", "batch_size", "eval_batch_size"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(t, key)}")
    if t.num_threads < 0:
        raise ConfigError(f"train.num_threads must be 0 (torch's default) or more, got {t.num_threads}")
    _check_device(t.device)
    if not 0.0 < t.lr_factor <= 1.0:
        raise ConfigError(f"train.lr_factor must be in (0, 1] (1 = never lower the rate), got {t.lr_factor}")
    if len(t.beta_grid) != 3 or int(t.beta_grid[2]) < 1 or t.beta_grid[1] < t.beta_grid[0]:
        raise ConfigError(f"train.beta_grid must be [start, stop, num] with stop >= start and num >= 1, "
                          f"got {t.beta_grid}")
    from avgzsl.data.layout import check_feature_set

    try:
        check_feature_set(cfg.data.feature_set)
    except ValueError as exc:
        raise ConfigError(f"data.feature_set: {exc}") from None
    method_cls = get_method(cfg.method_name)
    if cfg.data.temporal is None:
        cfg.data.temporal = method_cls.feature_kinds[0] == "temporal"
    kind = "temporal" if cfg.data.temporal else "averaged"
    if kind not in method_cls.feature_kinds:
        (other,) = set(method_cls.feature_kinds) - {kind} or {kind}
        raise ConfigError(f"method {cfg.method_name} takes {' or '.join(method_cls.feature_kinds)} features, not "
                          f"{kind} ones: set data.temporal={'true' if other == 'temporal' else 'false'}"
                          + (" (--temporal)" if other == "temporal" else " (drop --temporal)"))
    if cfg.data.class_embeddings is None:
        cfg.data.class_embeddings = method_cls.default_class_embeddings(cfg)
    if t.score_distance != "l2" and not method_cls.scores_by_embeddings():
        raise ConfigError(f"train.score_distance={t.score_distance}: method {cfg.method_name} computes its own "
                          f"distances, not L2 between embeddings; use train.score_distance=l2")
    _check_ceo(cfg.data.ceo)
    _check_method_ranges(cfg)
    method_cls.check_config(cfg)
    return cfg


def _check_ceo(c: CEOConfig) -> None:
    if not 0.0 <= c.alpha <= 1.0:
        raise ConfigError(f"data.ceo.alpha must be in [0, 1], got {c.alpha}")
    if c.margin < 0 or not c.lr > 0:
        raise ConfigError(f"data.ceo.margin must be >= 0 and data.ceo.lr > 0, got {c.margin} and {c.lr}")
    if c.steps < 0 or c.sampled_triplets < 1 or c.exact_triplets < 0:
        raise ConfigError(f"data.ceo.steps and data.ceo.exact_triplets must be >= 0 and data.ceo.sampled_triplets "
                          f">= 1, got {c.steps}, {c.exact_triplets} and {c.sampled_triplets}")


def _split_feature_sets(tree: dict, source) -> tuple[dict, dict]:
    tree = dict(tree)
    by_set = tree.pop("by_feature_set", None) or {}
    if not isinstance(by_set, dict) or not all(isinstance(v, dict) for v in by_set.values()):
        raise ConfigError(f"{source}: by_feature_set must map a feature set name to settings")
    from avgzsl.data.layout import FEATURE_SETS

    unknown = sorted(set(by_set) - set(FEATURE_SETS))
    if unknown:
        raise ConfigError(f"{source}: by_feature_set names unknown feature set(s) {', '.join(unknown)}; "
                          f"known: {', '.join(FEATURE_SETS)}")
    return tree, by_set


def apply_tree(cfg: RunConfig, tree: dict) -> RunConfig:
    for key, value in tree.items():
        if key in ("data", "train", "method"):
            if not isinstance(value, dict):
                raise ConfigError(f"section {key!r} must be a mapping")
            update_dataclass(getattr(cfg, key), value, key)
        elif key == "seed":
            cfg.seed = _coerce(value, int, "seed")
        else:
            raise ConfigError(f"unknown top-level key {key!r}; valid: data, train, method, seed")
    return cfg


def _load_yaml(path: Path) -> dict:
    try:
        with open(path) as fh:
            tree = load_yaml_text(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, no permission, a binary file
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read config file {path}: {reason}; --config takes a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # one line: where, then what
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"config file {path} is not valid YAML{where}: {what}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return tree


def config_from_dict(tree: dict) -> RunConfig:
    """Rebuild a RunConfig from a saved `config.yaml` (e.g. to re-score a finished run)."""
    tree = dict(tree)
    method = tree.pop("method_name")
    dataset = tree.get("data", {}).get("dataset", "UCF")
    from avgzsl.methods import get_method

    cfg = RunConfig(method_name=method, method=get_method(method).Config())
    cfg.data.dataset = dataset
    return check_config(apply_tree(cfg, tree))


# Settings that do not change what a run computes: a finished run may be reused across them, and an unfinished
# one continued (the device and the thread count change floating-point rounding only, so a run continued on
# another one is not bit-identical to one that never stopped; a killed GPU run may go on on a CPU).
RESUME_IGNORES = frozenset({"train.progress", "train.num_threads", "train.device", "data.cache_dir"})


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _comparable(tree: dict) -> dict:
    """A config dict as it computes. A config saved before a setting existed is completed with that setting's
    default (which is what the run did: new settings default to the earlier behaviour) by rebuilding it;
    runs saved before data.class_embeddings existed used the text embeddings; and CEO's settings (data.ceo.*)
    change nothing unless data.class_embeddings is ceo."""
    import copy

    try:
        tree = config_from_dict(tree).to_dict()
    except (ConfigError, KeyError, TypeError, ValueError):
        tree = copy.deepcopy(tree)  # a key this version no longer knows: compare the dicts as they are
    data = tree.get("data")
    if isinstance(data, dict):
        data.setdefault("class_embeddings", "text")
        if data["class_embeddings"] != "ceo":
            data.pop("ceo", None)
    return tree


def config_differences(a: dict, b: dict, ignore=RESUME_IGNORES) -> list[str]:
    """Keys (section.key) whose values differ between two config dicts, ignoring `ignore`."""
    fa, fb = _flatten(_comparable(a)), _flatten(_comparable(b))
    return sorted(k for k in fa.keys() | fb.keys() if k not in set(ignore) and fa.get(k) != fb.get(k))


def save_config(cfg: RunConfig, path: Path) -> None:
    from avgzsl.runs import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
