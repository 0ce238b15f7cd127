#!/usr/bin/env bash
# What one lent GPU machine ran for issue 12, as one prepared script (the device lease is ~15 minutes).
#
#   bash benchmarks/gpu_session.sh            # on the GPU machine, from the repository root; writes $OUT
#   DEV=cpu DEADLINE=120 EPOCHS=1 NB=3 REF_EPOCHS=1 REF_NB=3 SEEDS="0 1" bash benchmarks/gpu_session.sh  # dry run
#
# 1. environment; the synthetic UCF and ActivityNet benchmarks (same generator and seed as the README's);
# 2. a smoke run of AVCA, DAAN (temporal) and linear (temporal) on $DEV: stops here if one fails;
# 3. bare training steps, AVCA vs the DAAN variants, alone on the machine (benchmarks/bench_daan_step.py);
# 4. side by side until $DEADLINE: AVCA and DAAN at their full reference schedule (UCF, 50 x 500 x 256), and the
#    DAAN Table II ablation on temporal UCF and temporal ActivityNet-shaped data (5 seeds, linear as a row) at
#    $EPOCHS x $NB x $BS, every run on $DEV with one CPU thread. Runs still going at the deadline are stopped;
#    their per-epoch metrics come back.
# Everything (configs, metrics, logs, results; no checkpoints) comes back as $OUT/gpu_runs.tgz.
# It runs the checkout's own sources (PYTHONPATH=src) under the machine's python3 and torch: nothing is installed.
set -u
OUT=${OUT:-/tmp/gpu-out}
DEV=${DEV:-cuda}
DEADLINE=${DEADLINE:-535}
EPOCHS=${EPOCHS:-10}; NB=${NB:-60}; BS=${BS:-64}; SEEDS=${SEEDS:-"0 1 2 3 4"}
REF_EPOCHS=${REF_EPOCHS:-50}; REF_NB=${REF_NB:-500}
JOBS_UCF=${JOBS_UCF:-5}; JOBS_ANET=${JOBS_ANET:-6}
W=${W:-/tmp/gpuwork}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
A="python3 -m avgzsl.cli"
start=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - start) )); }
stamp() { echo "[$(( $(date +%s) - start )) s] $*" | tee -a "$OUT/session.log"; }
pack() {
    (cd "$W" && tar czf "$OUT/gpu_runs.tgz" --exclude='*.pt' --exclude='checkpoints' $(ls -d smoke ref abl ./*.log 2>/dev/null))
    stamp "packed $(du -h "$OUT/gpu_runs.tgz" | cut -f1)"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, numpy.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

stamp "synth"
$A synth --out "$W/data" --like UCF --scale 1 --seed 0 > "$W/synth_ucf.log" 2>&1 &
$A synth --out "$W/data" --like ActivityNet --scale 1 --seed 0 > "$W/synth_anet.log" 2>&1 &
wait
(cd "$W/data" && find . -name '*.h5' | sort | sed -n '1p;$p' | xargs md5sum) >> "$OUT/env.txt" 2>&1  # same data as here?

stamp "smoke on $DEV"
SM="train.epochs=1 train.n_batches=3 train.device=$DEV train.num_threads=2"
$A run --method avca --root "$W/data/UCF" --out "$W/smoke/avca" --quiet $SM > "$W/smoke_avca.log" 2>&1 & p1=$!
$A run --method daan --root "$W/data/UCF" --temporal --out "$W/smoke/daan_t" --quiet $SM > "$W/smoke_daan.log" 2>&1 & p2=$!
$A run --method linear --root "$W/data/UCF" --temporal --out "$W/smoke/linear_t" --quiet $SM > "$W/smoke_linear.log" 2>&1 & p3=$!
ok=1; for p in $p1 $p2 $p3; do wait $p || ok=0; done
if [ $ok = 0 ]; then stamp "SMOKE FAILED"; tail -n 30 "$W"/smoke_*.log; pack; exit 3; fi

stamp "bare steps"
timeout 120 python3 benchmarks/bench_daan_step.py --device "$DEV" --threads 1 --steps 30 --rounds 3 \
    --out "$OUT/bench_daan_step_$DEV.json" > "$W/bench.log" 2>&1 || stamp "bench failed"
grep -A8 '"seconds_per_step"' "$W/bench.log"; grep ratio "$W/bench.log"

stamp "reference schedules and temporal ablations, $(left) s left"
T="train.device=$DEV train.num_threads=1"
S="train.epochs=$EPOCHS train.n_batches=$NB train.batch_size=$BS"
timeout "$(left)" $A run --method avca --root "$W/data/UCF" --out "$W/ref/avca" --quiet $T \
    train.epochs=$REF_EPOCHS train.n_batches=$REF_NB > "$W/ref_avca.log" 2>&1 &
timeout "$(left)" $A run --method daan --root "$W/data/UCF" --out "$W/ref/daan" --quiet $T \
    train.epochs=$REF_EPOCHS train.n_batches=$REF_NB > "$W/ref_daan.log" 2>&1 &
timeout "$(left)" $A ablate --method daan --root "$W/data/UCF" --temporal --seeds $SEEDS --baseline linear \
    --out "$W/abl/ucf_temporal" --jobs "$JOBS_UCF" --quiet $T $S > "$W/abl_ucf_temporal.log" 2>&1 &
timeout "$(left)" $A ablate --method daan --dataset ActivityNet --root "$W/data/ActivityNet" --temporal --seeds $SEEDS \
    --baseline linear --out "$W/abl/anet_temporal" --jobs "$JOBS_ANET" --quiet $T $S > "$W/abl_anet_temporal.log" 2>&1 &
( while sleep 30; do stamp "$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)" \
    "finished runs: $(find "$W/ref" "$W/abl" -name results.json 2>/dev/null | wc -l)"; done ) & mon=$!
wait $(jobs -p | grep -v "^$mon$") 2>/dev/null
kill $mon 2>/dev/null
stamp "done"
tail -n 3 "$W"/ref_*.log "$W"/abl_*.log
pack
