#!/usr/bin/env bash
# MSN / TDN evaluation protocols (the checkpoint carries its configuration):
#   PROTOCOL=centre  1 clip x centre crop 224 at scale 256 (Something-Something)
#                    published top-1: SSv1 53.0 (8f) / 54.1 (16f), SSv2 63.9 / 65.5
#   PROTOCOL=full    10 random uniform clips x 3 full-res crops (256 at scale 256), softmax scores
#                    averaged over the 30 views as TDN/MSN's pkl_to_results.py (--view_softmax)
#                    (Kinetics-400), published top-1 77.1 (8f)
# Published numbers: MSN README (2 GPUs per its training command; model not stated). TDN-R50 (TDN
# README): SSv1 52.3 (8f) / 53.9 (16f), SSv2 64.0 / 65.3, K400 76.6 (8f) / 77.5 (16f).
set -euo pipefail
WEIGHTS=${WEIGHTS:?set WEIGHTS to an MSN or TDN checkpoint}
DATASET=${DATASET:-something}
PROTOCOL=${PROTOCOL:-centre}
case "$PROTOCOL" in
  centre) VIEWS=(--test_crops 1) ;;
  full) VIEWS=(--test_crops 3 --full_res --random_clips 10 --view_softmax) ;;
  *) echo "unknown PROTOCOL=$PROTOCOL; allowed: centre full" >&2; exit 2 ;;
esac
python test_models.py "$DATASET" --weights "$WEIGHTS" "${VIEWS[@]}" --batch_size ${BATCH:-4} \
  -j ${WORKERS:-8} ${EXTRA:-}
