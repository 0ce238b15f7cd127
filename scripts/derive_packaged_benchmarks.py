"""Derive the packaged benchmark metadata (src/avgzsl/data/benchmarks/) from the real class splits.

    python scripts/derive_packaged_benchmarks.py                      # rewrite the packaged files
    python scripts/derive_packaged_benchmarks.py --check              # exit 1 if they are out of date

The source is the AVCA-GZSL release's class-split/ folders and text embeddings, laid out as
../shared/benchmarks/<UCF|ActivityNet|VGGSound>/ (with LICENSE-AVCA-GZSL.md beside them). The output
is deterministic: rerunning the script on the same source gives identical files. See
avgzsl/data/packaged.py for the format.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from avgzsl.data import packaged

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "benchmarks",
                        help="folder holding <dataset>/class-split/ and the text embeddings (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "src" / "avgzsl" / "data" / "benchmarks",
                        help="where the packaged files go (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="derive into a temporary folder and compare with --out instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        for path in packaged.derive(args.source, args.out):
            print(f"{path}  {path.stat().st_size:,} bytes")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [p.name for p in packaged.derive(args.source, tmp)
                 if not (args.out / p.name).is_file() or (args.out / p.name).read_bytes() != p.read_bytes()]
    if stale:
        print(f"out of date in {args.out}: {', '.join(stale)} (rerun without --check)", file=sys.stderr)
        return 1
    print(f"{args.out}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
