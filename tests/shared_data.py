"""Real benchmark metadata for tests.

`packaged_folder` writes the packaged copy of a real benchmark (avgzsl.data.packaged: class lists,
name map, splits, text) into a folder laid out like ../shared/benchmarks/<dataset>/, so tests of the
class and text layer run everywhere. The original files, ../shared/benchmarks beside the checkout (or
$AVGZSL_BENCHMARKS), are needed only by the tests that compare the packaged copy with them or read
their original pickles; those skip, saying why, when they are absent.
"""

import os
from pathlib import Path

from avgzsl.data import layout, packaged
from avgzsl.data.metadata import write_class_split
from avgzsl.data.writers import write_text_embeddings

BENCHMARKS = Path(os.environ.get("AVGZSL_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
MISSING_REASON = f"{BENCHMARKS} (the original class splits and text embeddings) not present"


def packaged_folder(dataset: str, parent: Path) -> Path:
    """parent/<dataset>/ with class-split/ (no csvs) and the text file, from the packaged copy."""
    meta = packaged.load(dataset)
    root = Path(parent) / meta.dataset
    write_class_split(meta, layout.class_split_dir(root), layout.name_map_file(root, meta.dataset).name)
    write_text_embeddings(root / layout.text_file_name(meta.dataset), meta.text)
    return root
