#!/usr/bin/env bash
# The linear-gap probes of issue 12: one change at a time against the method at its own config, 5 seeds each,
# at the Table II schedule (10 epochs x 60 batches x 64), on synthetic UCF; then one table per method with the
# paired difference of every probe to the unchanged method (README "The linear gap").
#
#   bash benchmarks/gap_probes.sh avca  [PROBE ...]     # default: every probe below
#   BASE=runs/t2/ucf_averaged/avca bash benchmarks/gap_probes.sh avca   # reuse the unchanged runs of Table II
#
# Probes: standardise (data.standardise: z-scored inputs), cosine (train.score_distance: normalised outputs at
# scoring), nodropout (every dropout 0), lr_x0.3 / lr_x3 / lr_x10 (the method's learning rate scaled).
set -eu
M=$1; shift
PROBES=${*:-standardise cosine nodropout lr_x0.3 lr_x3}
ROOT=${ROOT:-data/synth/UCF}
OUTD=${OUTD:-runs/gap/$M}
SEEDS=${SEEDS:-0 1 2 3 4}
JOBS=${JOBS:-2}
S="train.epochs=${EPOCHS:-10} train.n_batches=${NB:-60} train.batch_size=${BS:-64} train.num_threads=1"
A="avgzsl run --method $M --root $ROOT --seeds $SEEDS --jobs $JOBS --quiet --resume --cache-dir data/cache"

base_lr=$(python3 -c "from avgzsl.config import build_config; print(build_config('$M', 'UCF', {}).method.lr)")
case $M in
    tcaf) nodrop="method.enc_dropout=0 method.token_dropout=0 method.transformer_dropout=0 method.o_dropout=0 method.w_dropout=0" ;;
    *) nodrop="method.embedding_dropout=0 method.decoder_dropout=0 method.additional_dropout=0" ;;
esac

rows=()
if [ -z "${BASE:-}" ]; then
    $A --out "$OUTD/$M" --label "$M" $S
    rows+=("$OUTD/$M")
else
    rows+=("$BASE")
fi
for p in $PROBES; do
    case $p in
        standardise) o="data.standardise=true" ;;
        cosine) o="train.score_distance=cosine" ;;
        nodropout) o=$nodrop ;;
        lr_x*) o="method.lr=$(python3 -c "print($base_lr * ${p#lr_x})")" ;;
        *) echo "unknown probe $p" >&2; exit 2 ;;
    esac
    $A --out "$OUTD/$p" --label "$M+$p" $S $o
    rows+=("$OUTD/$p")
done
avgzsl table "${rows[@]}" --reference "$M" | tee "$OUTD/gap.md"
