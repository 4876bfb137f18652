#!/usr/bin/env bash
# TIN evaluation as in mmaction2: 8 frames, 1 clip x 1 centre crop 224 (the checkpoint carries
# its own configuration; TIN's offset net is built for the training T, so keep the segments).
# Published top-1: SSv1 44.25, SSv2 56.70, K400 70.89 (mmaction2 0.x README, 8 GPUs).
set -euo pipefail
WEIGHTS=${WEIGHTS:?set WEIGHTS to a TIN checkpoint}
DATASET=${DATASET:-somethingv2}
python test_models.py "$DATASET" --weights "$WEIGHTS" --test_crops 1 --batch_size ${BATCH:-8} \
  -j ${WORKERS:-8} ${EXTRA:-}
