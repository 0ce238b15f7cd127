"""Where the real class splits and text embeddings are: ../shared/benchmarks beside the checkout
(or $AVGZSL_BENCHMARKS). Tests that need them skip, saying why, when they are absent."""

import os
from pathlib import Path

BENCHMARKS = Path(os.environ.get("AVGZSL_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
MISSING_REASON = f"{BENCHMARKS} (real class splits and text embeddings) not present"
