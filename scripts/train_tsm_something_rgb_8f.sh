#!/usr/bin/env bash
# TSM README recipe: Something-Something v1 or v2 (DATASET=something|somethingv2), TSM ResNet-50, 8 segments.
# Published (TSM README): SSv2 61.2 top-1 (8f, 3 crops x 2 clips full-res), SSv1 45.6 (1 clip centre crop).
# The released SSv2 files were trained for 45 epochs; no --wd, so 5e-4.
set -euo pipefail
DATASET=${DATASET:-somethingv2}
python main.py "$DATASET" RGB --arch resnet50 --num_segments 8 --gd 20 --lr 0.01 --wd 5e-4 \
  --lr_steps 20 40 --epochs ${EPOCHS:-45} --batch-size ${BATCH:-64} -j ${WORKERS:-16} --dropout 0.5 \
  --consensus_type=avg --eval-freq=1 --shift --shift_div=8 --shift_place=blockres --npb ${EXTRA:-}
