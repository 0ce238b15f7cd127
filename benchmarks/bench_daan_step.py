"""Seconds per DAAN training step with CSGM full / vc / off, the Base and AVCA, at a dataset's settings.

    PYTHONPATH=src python benchmarks/bench_daan_step.py [--dataset UCF] [--steps 20] [--rounds 3] [--threads 0]
        [--set method.token_residual=true method.pool=flatten]   (config overrides for every variant)

Random 512-d audio / video features and 300-d text, batch size and hyper-parameters from
configs/<dataset>/daan.yaml, a negative batch attached (as the protocol does). Each variant runs
`optimization_step` (forward of positives and negatives, loss, backward, CSGM, Adam). The variants are
timed in interleaved rounds and the median per variant is reported, so that a busy machine disturbs
them alike. Each variant's FLOPs per step (torch's FLOP counter) are reported too, with the FLOP rate.
The numbers to watch: full / off, the cost of CSGM (target <= 1.3), and full / avca against the FLOP
ratio (target <= 2; the FLOP ratio is what the two models' arithmetic allows). On a busy machine the
time ratios are noisy; `csgm_own_seconds_per_step` times CSGM's own calls (eta, V_o, noise) directly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from avgzsl.config import build_config
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims, get_method
from avgzsl.methods.daan import DAAN

VARIANTS = {
    "csgm_full": {"csgm": "full"},
    "csgm_vc": {"csgm": "vc"},
    "csgm_off": {"csgm": "off"},
    "base": {"use_qdma": False, "csgm": "off"},
}
REFERENCE = "avca"  # timed in the same rounds at its own config: the "DAAN step <= 2x AVCA" target


def random_batch(b: int, device, g: torch.Generator) -> Batch:
    def one():
        return Batch(torch.randn(b, 512, generator=g), torch.randn(b, 512, generator=g),
                     torch.randint(0, 30, (b,), generator=g), torch.randn(b, 300, generator=g))

    batch = one()
    batch.negative = one()
    return batch.to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_csgm_calls(model: DAAN, device, acc: list[float]) -> None:
    """Wrap the model's CSGM calls (eta from distances; V_o + noise) to time CSGM's own work directly."""
    csgm = model.csgm
    for name in ("prepare", "after_backward"):
        fn = getattr(csgm, name)

        def timed(*a, _fn=fn, **kw):
            sync(device)
            t0 = time.perf_counter()
            out = _fn(*a, **kw)
            sync(device)
            acc.append(time.perf_counter() - t0)
            return out

        setattr(csgm, name, timed)


def step_flops(model, opt, batch: Batch) -> int:
    """FLOPs of one optimisation step as torch.utils.flop_counter counts them (the optimiser's own
    elementwise work is not counted). The step runs for real: one extra update of the model."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model.optimization_step(batch, opt)
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="UCF")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every variant")
    ap.add_argument("--out", default=None, help="also write the report as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    models, opts, batches = {}, {}, {}
    for name, over in [*VARIANTS.items(), (REFERENCE, None)]:
        if over is None:  # AVCA at its own config (of the --set overrides only train.* apply to it)
            cfg = build_config(REFERENCE, args.dataset, [s for s in args.set if s.startswith("train.")])
            torch.manual_seed(0)
            model = get_method(REFERENCE)(cfg.method, DataDims(512, 512, 300)).to(device).train()
        else:
            cfg = build_config("daan", args.dataset, args.set + [f"method.{k}={v}" for k, v in over.items()])
            torch.manual_seed(0)
            model = DAAN(cfg.method, DataDims(512, 512, 300)).to(device).train()
        models[name], opts[name] = model, model.configure_optimizer()
        g = torch.Generator().manual_seed(1)
        batches[name] = [random_batch(cfg.train.batch_size, device, g) for _ in range(4)]
        for i in range(args.warmup):
            model.optimization_step(batches[name][i % 4], opts[name])
    batch_size = cfg.train.batch_size
    names = [*VARIANTS, REFERENCE]
    flops = {name: step_flops(models[name], opts[name], batches[name][0]) for name in names}
    csgm_own: list[float] = []
    time_csgm_calls(models["csgm_full"], device, csgm_own)

    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            model, opt, bs = models[name], opts[name], batches[name]
            sync(device)
            t0 = time.perf_counter()
            for i in range(args.steps):
                model.optimization_step(bs[i % 4], opt)
            sync(device)
            times[name].append((time.perf_counter() - t0) / args.steps)

    med = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "dataset": args.dataset, "overrides": args.set, "batch_size": batch_size, "device": str(device),
        "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
        "seconds_per_step": {k: round(v, 5) for k, v in med.items()},
        "all_rounds": {k: [round(x, 5) for x in v] for k, v in times.items()},
        "csgm_own_seconds_per_step": round(sum(csgm_own) / len(times["csgm_full"]) / args.steps, 5),
        "ratio_full_over_off": round(med["csgm_full"] / med["csgm_off"], 3),
        "ratio_vc_over_off": round(med["csgm_vc"] / med["csgm_off"], 3),
        "ratio_off_over_base": round(med["csgm_off"] / med["base"], 3),
        "ratio_full_over_avca": round(med["csgm_full"] / med[REFERENCE], 3),
        # The arithmetic itself (torch's FLOP counter: matrix products, convolutions, attention; one step,
        # forward + backward): a time ratio at this ratio means both models run at the same FLOP rate.
        "gflop_per_step": {k: round(v / 1e9, 3) for k, v in flops.items()},
        "gflop_per_second": {k: round(flops[k] / 1e9 / med[k], 1) for k in names},
        "flop_ratio_full_over_avca": round(flops["csgm_full"] / flops[REFERENCE], 3),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
