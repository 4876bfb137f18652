#!/usr/bin/env bash
# TIN ResNet-50 on Kinetics-400, fine-tuned from a TSM-R50 Kinetics checkpoint (TSM_WEIGHTS).
# Recipe: mmaction2 0.x tin_tsm_finetune_r50_1x1x8_50e_kinetics400_rgb: SGD lr 0.01, wd 1e-4,
# steps at epochs 20 and 40, 50 epochs, grad clip 20, 8 segments, BatchNorm trained.
# The TSM convs load into TIN's layerX.i.conv1.net.* (same keys); only TIN's offset/weight nets
# start fresh (main.py --tune_from -> ops.checkpoint.load_weights).
# Published top-1 / top-5 (mmaction2 0.x README, 8 GPUs; GPU model not stated): 70.89 / 89.89,
# 1 clip x centre crop (scripts/test_tin.sh).
set -euo pipefail
TSM_WEIGHTS=${TSM_WEIGHTS:?set TSM_WEIGHTS to a TSM ResNet-50 Kinetics-400 checkpoint}
DATASET=${DATASET:-kinetics}
python main.py "$DATASET" RGB --arch resnet50 --temporal_module tin --num_segments ${SEGMENTS:-8} \
  --tune_from "$TSM_WEIGHTS" --lr ${LR:-0.01} --lr_type step --lr_steps 20 40 --epochs ${EPOCHS:-50} \
  --wd 1e-4 --gd 20 --dropout 0.8 --batch-size ${BATCH:-48} -j ${WORKERS:-16} --npb --eval-freq 1 \
  ${EXTRA:-}
