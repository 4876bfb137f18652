#!/usr/bin/env bash
# Train ILA (frozen OpenAI CLIP ViT-B/16 + alignment modules + temporal transformer) on Kinetics-400.
#
# Published result (Tu et al., ICCV 2023; README of Francis-Rings/ILA), ViT-B/16 at 224 px,
# multi-view test 4 random clips x 3 crops (scripts/test_ila.sh):
#   8 frames: top-1 84.0 / top-5 96.6        16 frames: top-1 85.7 / top-5 97.2
#   (B/32: 81.3 / 82.4; L/14 8x224: 88.0; L/14@336 16 frames: 88.7 -> ARCH=ila_vit_l14_336 INPUT_SIZE=336)
# Published protocol: 8 GPUs x 8 clips x 4 accumulation steps = 256 clips per update; AdamW
# (0.9, 0.98), base lr 8e-6 with group multipliers (alignment 5e-4, skip layers 8e-5, temporal
# transformer and head 4e-4), weight decay 3e-3 (1e-2 / 1e-3 for alignment / skip layers),
# 50 epochs cosine with 5 warm-up epochs, mixed precision, alignment-loss weight 1, no flip.
# Schedule: timm CosineLRScheduler per step over the whole run, lr_min = base lr / 100, warm-up from 0
# (--lr_update step --decay_from start --min_lr_ratio 0.01). Two small differences: our floor is 1% of
# each group's lr (timm: one absolute 8e-8 for every group) and our warm-up ramps to the cosine's value at
# epoch 5 (97.6% of lr) instead of to lr before stepping down to it.
# The published K400 head matches CLIP text features of the class names (--ila_head text, the default
# on Kinetics): CATEGORY_FILE lists the 400 names, one per line in label order, written as words
# ("air drumming"); CLIP_WEIGHTS must hold both CLIP towers. Not reproduced in this project.
#
# Usage: CLIP_WEIGHTS=/data/clip/ViT-B-16.pt TRUST_JIT=1 CATEGORY_FILE=k400_names.txt FRAMES=16 scripts/train_ila_k400.sh
# Same command and variables as scripts/train_ila_sthv2.sh, with DATASET=kinetics.
#   TRUST_JIT=1 is needed for the OpenAI release file (TorchScript); not for state-dict/safetensors files.
set -euo pipefail
CATEGORY_FILE=${CATEGORY_FILE:?set CATEGORY_FILE to the Kinetics class names, one per line}
EXTRA_ARGS="--category_file $CATEGORY_FILE ${EXTRA_ARGS:-}" DATASET=${DATASET:-kinetics} \
    exec "$(dirname "$0")/train_ila_sthv2.sh"
