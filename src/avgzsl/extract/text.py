"""`avgzsl embed-classes`: class names -> the benchmark's text-embedding file, with CLIP and / or CLAP.

Each class's embedding is a prompt ensemble, as ClipClap computes it (clip_embeddings_extraction/*.py):
every template is filled with the class name, each prompt embedded and L2-normalised, the mean
L2-normalised. Encoders:
  clip      CLIP text, visual prompts ("a video of a person {}.")
  clap      CLAP text, audio prompts ("a person {} can be heard.")
  clipclap  both, concatenated [clip; clap] (ClipClap's 512 + 1024 = 1536 with its encoders; each half
            unit-length, the whole sqrt(2))
Prompt sets are ClipClap's: `person` (UCF and ActivityNet: actions of a person; 48 CLIP / 30 CLAP templates)
and `generic` (VGGSound: sounds and things; 8 / 9 templates); `name` embeds the bare class name.

For a benchmark folder the names are the *manual* names of its name map (the keys the loader looks up),
and the file is written where the loader looks, features/<set>_features/text/
word_embeddings_<prefix>_normed.npy, with the data layer's writer (np.save of a {name: float32 vector}
dict, read by the restricted unpickler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from avgzsl.data import layout
from avgzsl.data.classes import load_class_table, read_class_list
from avgzsl.data.writers import write_text_embeddings
from avgzsl.extract.encoders import DEFAULT_CLAP, DEFAULT_CLIP, ClapEncoder, ClipEncoder

__all__ = ["PROMPTS", "class_embeddings", "embed_benchmark_classes", "embed_names", "prompt_set"]

_ARTICLES = ("a photo of", "a video of", "a example of", "a demonstration of")
_PERSON_CLIP = [
    f"{lead} {who}{verb}{{}}."
    for verb in ("", "using ", "doing ", "during ", "performing ", "practicing ")
    for who in ("a person ", "the person ")
    for lead in _ARTICLES
]
_PERSON_CLAP = (
    [
        "a person {} can be heard.",
        "a example of a person {} can be heard.",
        "a demonstration of a person {} can be heard.",
        "the person {} can be heard.",
        "a example of the person {} can be heard.",
        "a demonstration of the person {} can be heard.",
    ]
    + [
        t
        for verb in ("using", "doing")
        for t in (
            f"a person {verb} {{}} can be heard.",
            f"a example of a person {verb} {{}} can be heard.",
            f"a demonstration of a person {verb} {{}} can be heard.",
            f"a example of the person {verb} {{}} can be heard.",
            f"a demonstration of the person {verb} {{}} can be heard.",
        )
    ]
    + [
        "a example of a person during {} can be heard.",
        "a demonstration of a person during {} can be heard.",
        "a example of the person during {} can be heard.",
        "a demonstration of the person during {} can be heard.",
    ]
    + [
        t
        for verb in ("performing", "practicing")
        for t in (
            f"a person {verb} {{}} can be heard.",
            f"a example of a person {verb} {{}} can be heard.",
            f"a demonstration of a person {verb} {{}} can be heard.",
            f"a example of the person {verb} {{}} can be heard.",
            f"a demonstration of the person {verb} {{}} can be heard.",
        )
    ]
)
_GENERIC_CLIP = [
    "a photo of {}.",
    "a video of {}.",
    "a example of {}.",
    "a demonstration of {}.",
    "a photo of the person {}.",
    "a video of the {}.",
    "a example of the {}.",
    "a demonstration of the {}.",
]
_GENERIC_CLAP = [
    "a {} can be heard.",
    "a example of a {} can be heard.",
    "a demonstration of a {} can be heard.",
    "the {} can be heard.",
    "a example of the {} can be heard.",
    "a demonstration of the {} can be heard.",
    "{} can be heard.",
    "a example of {} can be heard.",
    "a demonstration of {} can be heard.",
]

# {set: {"clip": templates, "clap": templates}}: ClipClap's lists (its CLIP person list is every combination
# of the four leads, two articles and six verbs: 48; its CLAP lists are written out)
PROMPTS = {
    "person": {"clip": _PERSON_CLIP, "clap": _PERSON_CLAP},
    "generic": {"clip": _GENERIC_CLIP, "clap": _GENERIC_CLAP},
    "name": {"clip": ["{}"], "clap": ["{}"]},
}
_PERSON_DATASETS = ("UCF", "ActivityNet")


def prompt_set(prompts: str, dataset: str) -> str:
    """'auto' -> ClipClap's choice for the dataset (person for UCF and ActivityNet, generic otherwise)."""
    if prompts == "auto":
        return "person" if dataset in _PERSON_DATASETS else "generic"
    if prompts not in PROMPTS:
        raise ValueError(f"--prompts must be auto or one of {', '.join(PROMPTS)}, got {prompts!r}")
    return prompts


def read_templates(path: str | Path) -> list[str]:
    """Templates from a file, one per line, each with one {} for the class name."""
    lines = [t for t in read_class_list(path)]
    bad = [t for t in lines if t.count("{}") != 1]
    if not lines or bad:
        raise ValueError(
            f"{path}: every template line needs exactly one {{}} for the class name"
            + (f" (not: {bad[0]!r})" if bad else " (the file is empty)")
        )
    return lines


def class_embeddings(encoder, names: list[str], templates: list[str]) -> np.ndarray:
    """[C, D]: per class, the L2-normalised mean of the L2-normalised embeddings of its prompts (one batch of
    all)."""
    prompts = [t.format(n) for n in names for t in templates]
    emb = encoder.encode_text(prompts).reshape(len(names), len(templates), -1)  # rows already unit-length
    mean = emb.mean(1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def embed_names(
    names: list[str],
    encoder: Literal["clip", "clap", "clipclap"] = "clipclap",
    *,
    prompts: str = "generic",
    clip_model: str = DEFAULT_CLIP,
    clap_model: str = DEFAULT_CLAP,
    clip_templates: list[str] | None = None,
    clap_templates: list[str] | None = None,
    local_files_only: bool = False,
    device: str = "cpu",
    batch_size: int = 256,
) -> tuple[np.ndarray, dict]:
    """[C, D] embeddings of `names` and a description of how they were made."""
    if encoder not in ("clip", "clap", "clipclap"):
        raise ValueError(f"--encoder must be clip, clap or clipclap, got {encoder!r}")
    if not names:
        raise ValueError("no class names to embed")
    parts, info = [], {"encoder": encoder, "prompts": prompts, "parts": []}
    if encoder in ("clip", "clipclap"):
        enc = ClipEncoder(
            clip_model, local_files_only=local_files_only, device=device, batch_size=batch_size, text=True
        )
        tpl = clip_templates or PROMPTS[prompts]["clip"]
        parts.append(class_embeddings(enc, names, tpl))
        info["parts"].append({**enc.identity, "dim": enc.dim, "templates": len(tpl)})
    if encoder in ("clap", "clipclap"):
        enc = ClapEncoder(
            clap_model, local_files_only=local_files_only, device=device, batch_size=batch_size, text=True
        )
        tpl = clap_templates or PROMPTS[prompts]["clap"]
        parts.append(class_embeddings(enc, names, tpl))
        info["parts"].append({**enc.identity, "dim": enc.dim, "templates": len(tpl)})
    return np.concatenate(parts, axis=1), info


def embed_benchmark_classes(
    root: str | Path,
    dataset: str | None = None,
    feature_set: str = "clip",
    out: str | Path | None = None,
    names_file: str | Path | None = None,
    **kwargs,
) -> dict:
    """Embed the classes of the benchmark at `root` (its name map's manual names), or the names in
    `names_file`, and write the text-embedding file (default: where the loader looks for the feature set
    `feature_set`).

    kwargs go to `embed_names` (encoder, prompts='auto' allowed, models, templates, device, ...).
    Returns {'path', 'classes', 'dim', ...}.
    """
    root_path = Path(root).expanduser() if root is not None else None
    dataset = dataset or (root_path.resolve().name if root_path is not None else "classes")
    if names_file is not None:
        names = read_class_list(names_file)
    elif root_path is not None:
        names = load_class_table(root_path, dataset).manual
    else:
        raise ValueError("give --root (a benchmark folder) or --names (a file of class names)")
    kwargs["prompts"] = prompt_set(kwargs.get("prompts", "auto"), dataset)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"class name(s) listed twice: {', '.join(dup)}")
    vectors, info = embed_names(names, **kwargs)
    if out is None:
        if root_path is None:
            raise ValueError("--names without --root needs --out: the .npy file to write")
        out = layout.feature_dir(root_path, feature_set, False) / "text" / layout.text_file_name(dataset)
    write_text_embeddings(out, dict(zip(names, vectors)))
    return {"path": str(out), "classes": len(names), "dim": int(vectors.shape[1]), **info}
