#!/usr/bin/env bash
# Cheaper distillation from precomputed teacher scores, in two steps.
#   1. test_models.py runs the teacher once over the TRAIN list and saves its logits per video
#      (--save_scores: arrays scores (videos x views x classes), labels, video_ids, protocol).
#   2. main.py trains the RGB student on those logits (--teacher_scores): one teacher score per video,
#      averaged over the test views, while the student sees random training views. This is NOT the
#      view-consistent ("patient") distillation of Radevski et al. (ICCV 2023); use scripts/train_distill.sh
#      for that. Loss and optimiser recipe as there: T = 1, distill_weight 1, gt_weight 0; AdamW
#      lr 1e-4, wd 0.02, 3 warm-up epochs, linear decay over 30 epochs, gradient clip 5.
# Expected result: not measured on a full dataset; the README has the toy-dataset numbers.
#
# Usage: TEACHER=flow_teacher.pth TRAIN_LIST=data/train.txt scripts/distill_two_step.sh [extra main.py options]
set -euo pipefail

DATASET="${DATASET:-something}"
TEACHER="${TEACHER:-checkpoints/teacher.pth}"
TRAIN_LIST="${TRAIN_LIST:-data/train_videofolder.txt}"
SCORES="${SCORES:-teacher_scores.npz}"
ARCH="${ARCH:-resnet50}"
SEGMENTS="${SEGMENTS:-8}"
BATCH="${BATCH:-16}"
TEST_CROPS="${TEST_CROPS:-1}"
TEMPERATURE="${TEMPERATURE:-1}"
DISTILL_WEIGHT="${DISTILL_WEIGHT:-1}"
GT_WEIGHT="${GT_WEIGHT:-0}"
# The student's temporal module (TSM by default); set to "" for a plain TSN student.
STUDENT_ARGS="${STUDENT_ARGS---shift --shift_div 8 --shift_place blockres}"

# Step 1: teacher logits on the training videos (the teacher's own config comes from its checkpoint).
python test_models.py "$DATASET" --weights "$TEACHER" --test_list "$TRAIN_LIST" \
    --test_segments "$SEGMENTS" --test_crops "$TEST_CROPS" --save_scores "$SCORES"

# Step 2: the RGB student learns from them.
# shellcheck disable=SC2086  # STUDENT_ARGS is a list of options, split on purpose
python main.py "$DATASET" RGB \
    --arch "$ARCH" --num_segments "$SEGMENTS" --batch-size "$BATCH" $STUDENT_ARGS \
    --teacher_scores "$SCORES" \
    --distill_temperature "$TEMPERATURE" --distill_weight "$DISTILL_WEIGHT" --gt_weight "$GT_WEIGHT" \
    --optimizer adamw --lr 1e-4 --wd 0.02 --warmup_epochs 3 --lr_type linear --lr_update step --epochs 30 --gd 5 \
    "$@"
