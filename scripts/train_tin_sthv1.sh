#!/usr/bin/env bash
# TIN ResNet-50 on Something-Something v1: same recipe as scripts/train_tin_sthv2.sh.
# Published top-1 / top-5 (mmaction2 0.x README, 8 GPUs; GPU model not stated): SSv1 44.25 / 73.94
# (original-repo retrain by mmaction2: 44.04 / 72.72). The mmaction2 0.x SSv1 config ends the cosine at
# half the lr (min_lr_ratio 0.5), set here.
set -euo pipefail
DATASET=${DATASET:-something} MIN_LR_RATIO=${MIN_LR_RATIO:-0.5} exec "$(dirname "$0")/train_tin_sthv2.sh"
