#!/usr/bin/env bash
# Evaluate an ILA checkpoint with the published multi-view protocol: 4 random (seeded) segment
# samplings x 3 crops (short side resized to the input size, left/centre/right crops), softmax
# scores averaged over the 12 views per video.
#
# Published top-1 with this protocol (Tu et al., ICCV 2023), ViT-B/16 at 224 px:
#   Kinetics-400: 84.0 (8 frames) / 85.7 (16 frames)   Something-Something v2: 65.0 / 66.8
# The checkpoint carries the model configuration (architecture, frames, input size) and all CLIP
# weights, so no CLIP file is needed here. Not reproduced in this project.
#
# Usage: WEIGHTS=runs/ila_k400/ckpt.best.pth.tar DATASET=kinetics FRAMES=8 scripts/test_ila.sh
set -euo pipefail

DATASET=${DATASET:-kinetics}
WEIGHTS=${WEIGHTS:?set WEIGHTS to the trained checkpoint}
FRAMES=${FRAMES:-8}
INPUT_SIZE=${INPUT_SIZE:-224}  # 336 for ila_vit_l14_336; the short side is resized to this size
CROPS=${CROPS:-3}
CLIPS=${CLIPS:-4}
BATCH=${BATCH:-4}
WORKERS=${WORKERS:-8}
EXTRA_ARGS=${EXTRA_ARGS:-}

# shellcheck disable=SC2086  # EXTRA_ARGS is a list of options
python test_models.py "$DATASET" --weights "$WEIGHTS" --test_segments "$FRAMES" \
    --scale_size "$INPUT_SIZE" --test_crops "$CROPS" --random_clips "$CLIPS" \
    --batch_size "$BATCH" -j "$WORKERS" --view_softmax $EXTRA_ARGS
