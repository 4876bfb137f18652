#!/usr/bin/env bash
# One unimodal teacher of multimodal distillation on Something-Something v2 or Something-Else (Radevski et
# al., "Multimodal Distillation for Egocentric Action Recognition", ICCV 2023; configs/something-video.yaml,
# something-else-video.yaml and something-detections.yaml of gorjanradevski/multimodal-distillation).
#
# Teachers: RGB -> Video Swin-T, Flow -> Video Swin-T (one flow frame per segment, given as (x, y, 0)),
# Layout (object detections) -> STLT. Swin-T starts from the Kinetics-400 Swin-T
# (swin_tiny_patch244_window877_kinetics400_1k.pth, or torchvision's swin3d_t-7615ae03.pth).
# Recipe (the configs): 16 frames, one per equal segment (random in training, the middle one at test),
# 224 px, batch 16 (STLT 128), AdamW lr 1e-4 on every parameter, weight decay 0.02, 3 warm-up epochs then
# linear decay to 0 at epoch 30 updated every step, gradient norm clipped at 5, no flip (Something
# registry), a linear head without dropout, 1 clip x 1 centre crop at test (NUM_TEST_CLIPS/CROPS 1).
# What differs from the paper: README, "Multimodal distillation".
# Something-Else: the compositional split's lists (TRAIN_LIST, VAL_LIST; same 174 classes).
#
# Reported numbers: the reference notes hold the paper's abstract only (no tables); no target is given.
# Hardware: not run here (a CPU-only machine); the paper trained on GPUs with batch 16.
#
# Usage: MODALITY=RGB SWIN_WEIGHTS=swin_tiny_patch244_window877_kinetics400_1k.pth scripts/train_md_something_teacher.sh
#        MODALITY=Flow ... ; MODALITY=Layout scripts/train_md_something_teacher.sh
#        Something-Else: TRAIN_LIST=.../train_videofolder.txt VAL_LIST=.../val_videofolder.txt RUN=something_else
set -euo pipefail

MODALITY="${MODALITY:-RGB}"
DATASET="${DATASET:-somethingv2}"
RUN="${RUN:-something}"
SWIN_WEIGHTS="${SWIN_WEIGHTS:-data/pretrained-backbones/swin_tiny_patch244_window877_kinetics400_1k.pth}"
LAYOUT_ARCH="${LAYOUT_ARCH:-stlt}"
FRAMES="${FRAMES:-16}"
EPOCHS="${EPOCHS:-30}"
LR="${LR:-1e-4}"
WORKERS="${WORKERS:-8}"
LISTS=()
if [ -n "${TRAIN_LIST:-}" ]; then LISTS+=(--train_list "$TRAIN_LIST" --val_list "${VAL_LIST:?set VAL_LIST too}"); fi
case "$MODALITY" in
    RGB|Flow) ARCH=swin3d_t; BATCH="${BATCH:-16}"; PRETRAIN="$SWIN_WEIGHTS" ;;
    Layout) ARCH="$LAYOUT_ARCH"; BATCH="${BATCH:-128}"; PRETRAIN=none ;;
    *) echo "MODALITY must be RGB, Flow or Layout, got $MODALITY" >&2; exit 2 ;;
esac

python main.py "$DATASET" "$MODALITY" "${LISTS[@]}" \
    --arch "$ARCH" --pretrain "$PRETRAIN" --num_segments "$FRAMES" --batch-size "$BATCH" --dropout 0 \
    --optimizer adamw --param_groups uniform --lr "$LR" --wd 0.02 --lr_type linear --warmup_epochs 3 \
    --lr_update step --epochs "$EPOCHS" --gd 5 --color_jitter 1 --eval-freq 1 -j "$WORKERS" \
    --run_name "md_${RUN}_${MODALITY}_${ARCH}" "$@"
