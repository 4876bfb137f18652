#!/usr/bin/env bash
# MSN ResNet-50 (TDN + STP-ME + DS-ME), ImageNet init, Something-Something (v1 default).
# Recipe (MSN README command, as TDN): SGD lr 0.01 (momentum 0.9, wd 5e-4), steps x0.1 at epochs
# 30/45/55, 60 epochs, no warm-up, grad clip 20, dropout 0.5, BatchNorm trained, 5 consecutive
# frames per segment, 8 or 16 segments (SEGMENTS). The MSN README launches 2 GPUs x 8 clips
# (batch 16) at this lr; TDN used 8 GPUs x 8 (batch 64): which produced the numbers is unclear.
# As the reference code trains: every parameter at lr x1 with weight decay (--param_groups uniform:
# TDN/MSN main.py never apply TSN's lr_mult/decay_mult), horizontal flip with p 0.5 that swaps the
# left/right classes 86<->87, 93<->94, 166<->167 (--flip on; the pairs come from the registry), and
# the new modules initialised as FBResNet does (--motion_init reference, the default).
# Test: 1 clip x centre crop 224 (scripts/test_msn.sh).
# Published top-1 / top-5 (MSN README; hardware: 2 GPUs per its command, model not stated):
#   SSv1 8f 53.0 / 81.5, 16f 54.1 / 82.3     SSv2 (DATASET=somethingv2) 8f 63.9 / 89.2, 16f 65.5 / 89.9
# MODULE=tdn BATCH=64 trains TDN-R50 itself with its published recipe (8 GPUs x 8); TDN README top-1 / top-5:
#   SSv1 8f 52.3 / 80.6, 16f 53.9 / 82.1     SSv2 8f 64.0 / 88.8, 16f 65.3 / 89.7
set -euo pipefail
DATASET=${DATASET:-something}
python main.py "$DATASET" RGB --arch resnet50 --temporal_module ${MODULE:-msn} --new_length 5 \
  --num_segments ${SEGMENTS:-8} --lr ${LR:-0.01} --lr_type step --lr_steps 30 45 55 \
  --epochs ${EPOCHS:-60} --wd 5e-4 --gd 20 --dropout 0.5 --batch-size ${BATCH:-16} -j ${WORKERS:-16} \
  --npb --param_groups uniform --flip on --eval-freq 1 ${EXTRA:-}
