#!/usr/bin/env bash
# TSM README recipe: UCF101 split 1, fine-tuned from a Kinetics TSM model. Partial BN stays ON (no --npb),
# dropout 0.8, 25 epochs. KINETICS_CKPT: a checkpoint of this project or a released TSM .pth file.
set -euo pipefail
KINETICS_CKPT=${KINETICS_CKPT:?set KINETICS_CKPT to a Kinetics TSM checkpoint}
python main.py ucf101 RGB --arch resnet50 --num_segments 8 --gd 20 --lr 0.001 --lr_steps 10 20 \
  --epochs 25 --batch-size ${BATCH:-64} -j ${WORKERS:-16} --dropout 0.8 --consensus_type=avg \
  --eval-freq=1 --shift --shift_div=8 --shift_place=blockres --tune_from="$KINETICS_CKPT" ${EXTRA:-}
