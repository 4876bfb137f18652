#!/usr/bin/env bash
# MSN ResNet-50 on Kinetics-400, ImageNet init, 8 segments of 5 consecutive frames.
# Recipe (MSN README command, as TDN): SGD lr 0.02 (momentum 0.9, wd 1e-4), steps x0.1 at epochs
# 50/75/90, 100 epochs, grad clip 20, dropout 0.5, BatchNorm trained. The MSN README launches
# 2 GPUs x 8 clips (batch 16); TDN used 8 GPUs x 16 (batch 128) at the same lr.
# As the reference code trains: every parameter at lr x1 with weight decay (--param_groups uniform),
# random horizontal flip (the Kinetics registry default), FBResNet initialisation of the new modules.
# Test: 10 clips x 3 full-res crops (PROTOCOL=full scripts/test_msn.sh).
# Published top-1 / top-5 (MSN README; hardware: 2 GPUs per its command, model not stated):
#   K400 8f 77.1 / 93.6 (TDN-R50: 76.6 / 92.8)
# MODULE=tdn BATCH=128 trains TDN-R50 itself with its published recipe (TDN README: 8f 76.6 / 92.8,
# 16f 77.5 / 93.2).
set -euo pipefail
DATASET=${DATASET:-kinetics}
python main.py "$DATASET" RGB --arch resnet50 --temporal_module ${MODULE:-msn} --new_length 5 \
  --num_segments ${SEGMENTS:-8} --lr ${LR:-0.02} --lr_type step --lr_steps 50 75 90 \
  --epochs ${EPOCHS:-100} --wd 1e-4 --gd 20 --dropout 0.5 --batch-size ${BATCH:-16} -j ${WORKERS:-16} \
  --npb --param_groups uniform --eval-freq 1 ${EXTRA:-}
