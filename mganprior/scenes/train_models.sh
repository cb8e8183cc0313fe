#!/usr/bin/env bash
# Reproduce the committed scene-world models: the three domain generators and the segmenter,
# trained concurrently, one single-threaded process each. The defaults below are the settings of
# the committed weights (docs/models.md): on 2 CPU cores the generators took 86 min and the
# segmenter's three stages 75 min, all at once. On a GPU pass DEVICE=cuda (and larger settings).
#
#   mganprior/scenes/train_models.sh [OUT]            # default OUT: runs/scene-models
#   python -m mganprior.scenes.publish OUT            # copy the weights into mganprior/scenes/weights/
#
# Every command resumes from its last checkpoint when rerun with the same OUT; a generator rerun
# with a larger GAN_ITERATIONS continues training.
set -euo pipefail
OUT=${1:-runs/scene-models}
MGANPRIOR=${MGANPRIOR:-mganprior}
GAN_ITERATIONS=${GAN_ITERATIONS:-4000}
GAN_IMAGES=${GAN_IMAGES:-10000}
SEG_ITERATIONS=${SEG_ITERATIONS:-2500}
SEG_IMAGES=${SEG_IMAGES:-5000}
DEVICE=${DEVICE:-cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
pids=()
for domain in bedroom conference_room church_outdoor; do
  $MGANPRIOR train-generator --domain "$domain" --out "$OUT/$domain" \
    --iterations "$GAN_ITERATIONS" --images "$GAN_IMAGES" --batch 16 \
    --channels 128,128,64,32,16 --z-dim 128 --r1-every 16 --checkpoint-every 250 \
    --device "$DEVICE" --cache "$OUT/cache" --quiet > "$OUT/$domain.log" 2>&1 &
  pids+=($!)
done
# The segmenter: 2500 steps from scratch, then two fine-tuning stages with an added Dice loss
# (which lifts the small classes: lamp, pillow, nightstand), each from the previous stage's model.
(
  $MGANPRIOR train-segmenter --out "$OUT/segmenter" --iterations "$SEG_ITERATIONS" \
    --images-per-domain "$SEG_IMAGES" --batch 32 --checkpoint-every 250 --device "$DEVICE" \
    --cache "$OUT/cache" --quiet
  $MGANPRIOR train-segmenter --out "$OUT/segmenter-finetune" --init-from "$OUT/segmenter/model" \
    --iterations 1500 --lr 0.0007 --dice-weight 1.0 --images-per-domain "$SEG_IMAGES" \
    --batch 32 --checkpoint-every 250 --device "$DEVICE" --cache "$OUT/cache" --quiet
  $MGANPRIOR train-segmenter --out "$OUT/segmenter-finetune2" \
    --init-from "$OUT/segmenter-finetune/model" --iterations 1000 --lr 0.0004 --dice-weight 1.0 \
    --images-per-domain "$SEG_IMAGES" --batch 32 --checkpoint-every 250 --device "$DEVICE" \
    --cache "$OUT/cache" --quiet
) > "$OUT/segmenter.log" 2>&1 &
pids+=($!)
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 3 "$OUT"/*.log
exit $status
