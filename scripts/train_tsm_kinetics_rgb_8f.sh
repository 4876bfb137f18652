#!/usr/bin/env bash
# TSM README recipe: Kinetics-400, TSM ResNet-50, 8 segments, 50 epochs.
# Published (TSM README, 8 GPUs): 71.2 top-1 with 8 frames x 1 crop; 72.8 with 10 crops.
set -euo pipefail
DATASET=${DATASET:-kinetics}
python main.py "$DATASET" RGB --arch resnet50 --num_segments 8 --gd 20 --lr 0.02 --wd 1e-4 \
  --lr_steps 20 40 --epochs 50 --batch-size ${BATCH:-128} -j ${WORKERS:-16} --dropout 0.5 \
  --consensus_type=avg --eval-freq=1 --shift --shift_div=8 --shift_place=blockres --npb ${EXTRA:-}
