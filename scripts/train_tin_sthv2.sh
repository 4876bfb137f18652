#!/usr/bin/env bash
# TIN ResNet-50 (temporal interlacing, shift_div 4), ImageNet init, 8 segments, Something-Something.
# Recipe: mmaction2 0.x tin_r50_1x1x8_40e_sthv2_rgb: SGD lr 0.02 (momentum 0.9, wd 5e-4), cosine
# over 40 epochs updated per iteration, 1 linear warm-up epoch starting at lr/10 (mmcv warmup_ratio 0.1,
# scaling the cosine), grad clip 20, dropout 0.8, BatchNorm trained,
# batch 48 (8 GPUs x 6), 1 clip x centre crop 224 at test (scripts/test_tin.sh).
# Published top-1 / top-5 (mmaction2 0.x README, 8 GPUs; GPU model not stated):
#   SSv2 56.70 / 83.62   SSv1 44.25 / 73.94 (DATASET=something MIN_LR_RATIO=0.5: that config stops
#   the cosine at half the lr; scripts/train_tin_sthv1.sh sets both)
# Our feature gradient through the shift is the true adjoint; mmaction2 used mmcv's tin_shift,
# whose backward is not (see ops/tin.py), so numbers may differ slightly.
set -euo pipefail
DATASET=${DATASET:-somethingv2}
SEGMENTS=${SEGMENTS:-8}
python main.py "$DATASET" RGB --arch resnet50 --temporal_module tin --num_segments "$SEGMENTS" \
  --lr ${LR:-0.02} --lr_type cos --warmup_epochs 1 --warmup_start_ratio 0.1 --lr_update step \
  --decay_from start --min_lr_ratio ${MIN_LR_RATIO:-0} --epochs ${EPOCHS:-40} --wd 5e-4 --gd 20 \
  --dropout 0.8 --batch-size ${BATCH:-48} -j ${WORKERS:-16} --npb --eval-freq 1 ${EXTRA:-}
