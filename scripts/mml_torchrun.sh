#!/usr/bin/env bash
# Mutual Modality Learning (RGB,Flow from one RGB initialisation: the MML paper's minimal recipe) under
# torchrun on one node. With NPROC = 2 x R, each modality gets R data-parallel replicas (rank r trains
# modality r % 2 as replica r // 2); R = 1 is the paper's setting.
# Hardware assumed: NPROC GPUs on one node. Expected: RGB top-1 above the RGB-alone baseline.
set -euo pipefail
DATASET=${DATASET:-somethingv2}
MODALITIES=${MODALITIES:-RGB,Flow}
NPROC=${NPROC:-2}
RGB_INIT=${RGB_INIT:?set RGB_INIT to the step-1 RGB checkpoint}
torchrun --standalone --nproc_per_node="$NPROC" main.py "$DATASET" "$MODALITIES" \
  --arch resnet50 --num_segments 8 --shift --npb --lr 0.01 --lr_steps 20 40 --epochs 50 \
  --batch-size 64 --gd 20 --dropout 0.5 -j 16 --eval-freq 1 --tune_from "$RGB_INIT" --first_conv_lr mml \
  ${EXTRA:-}
