#!/usr/bin/env bash
# Multimodal distillation on EPIC-KITCHENS-100 (Radevski et al., ICCV 2023): a two-head (verb 97, noun
# 300) Video Swin-T RGB student taught by the RGB, Flow and Audio teachers of
# scripts/train_md_epic_teacher.sh, per head: loss = mean over heads of T^2 * KL(softmax(z_ens/T) ||
# softmax(z_s/T)), ensemble = mean of the teachers' logits, T = 1, no ground-truth term (the repository
# defaults). Student recipe as the teachers' (8 frames at stride 8, AdamW lr 1e-4, wd 0.02, 3 warm-up
# epochs, linear decay to 0 at epoch 30 per step, clip 5, batch 16).
# What differs from the paper: README, "Multimodal distillation".
#
# Reported numbers: none in the reference notes (abstract only). Hardware: not run here (CPU-only machine).
#
# Usage: RGB_TEACHER=... FLOW_TEACHER=... AUDIO_TEACHER=... SWIN_WEIGHTS=... scripts/train_md_epic_student.sh
set -euo pipefail

DATASET="${DATASET:-epic100}"
ROOT="${ROOT:-data/epic100/{modality}}"
TRAIN_LIST="${TRAIN_LIST:-data/epic100/train.txt}"
VAL_LIST="${VAL_LIST:-data/epic100/val.txt}"
HEADS="${HEADS:-verb:97,noun:300}"
SWIN_WEIGHTS="${SWIN_WEIGHTS:-data/pretrained-backbones/swin_tiny_patch244_window877_kinetics400_1k.pth}"
CKPT="${CKPT:-checkpoint}"
RGB_TEACHER="${RGB_TEACHER:-$CKPT/md_epic_RGB_swin3d_t/ckpt.best.pth.tar}"
FLOW_TEACHER="${FLOW_TEACHER:-$CKPT/md_epic_Flow_swin3d_t/ckpt.best.pth.tar}"
AUDIO_TEACHER="${AUDIO_TEACHER:-$CKPT/md_epic_Audio_swin3d_t/ckpt.best.pth.tar}"
TEACHERS="${TEACHERS:-$RGB_TEACHER,$FLOW_TEACHER,$AUDIO_TEACHER}"
WEIGHTING="${WEIGHTING:-uniform}"
TEMPERATURE="${TEMPERATURE:-1}"
FRAMES="${FRAMES:-8}"
WINDOW="${WINDOW:-64}"
BATCH="${BATCH:-16}"
EPOCHS="${EPOCHS:-30}"
LR="${LR:-1e-4}"
WORKERS="${WORKERS:-8}"

python main.py "$DATASET" RGB --root_path "$ROOT" --train_list "$TRAIN_LIST" --val_list "$VAL_LIST" \
    --heads "$HEADS" --arch swin3d_t --pretrain "$SWIN_WEIGHTS" --num_segments "$FRAMES" \
    --dense_sample --dense_length "$WINDOW" --batch-size "$BATCH" --dropout 0 \
    --distill_from "$TEACHERS" --teacher_weighting "$WEIGHTING" --distill_temperature "$TEMPERATURE" \
    --distill_weight 1 --gt_weight 0 \
    --optimizer adamw --param_groups uniform --lr "$LR" --wd 0.02 --lr_type linear --warmup_epochs 3 \
    --lr_update step --epochs "$EPOCHS" --gd 5 --eval-freq 1 -j "$WORKERS" \
    --run_name "md_epic_student_swin3d_t" "$@"
