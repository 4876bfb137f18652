#!/usr/bin/env bash
# TSM README evaluation protocols for one checkpoint (WEIGHTS). DATASET picks the dataset.
#   uniform 1 clip x 1 centre crop   (efficient setting; Kinetics 8f: 71.2)
#   twice 2 clips x 3 crops full-res (Something "accurate" setting; SSv2 8f: 61.2)
#   dense 10 clips x 3 crops full-res (Kinetics dense / non-local models)
set -euo pipefail
WEIGHTS=${WEIGHTS:?set WEIGHTS to a checkpoint}
DATASET=${DATASET:-somethingv2}
python test_models.py "$DATASET" --weights "$WEIGHTS" --test_crops 1 --batch_size 8 -j 8
python test_models.py "$DATASET" --weights "$WEIGHTS" --test_crops 3 --twice_sample --full_res -j 8
python test_models.py "$DATASET" --weights "$WEIGHTS" --test_crops 3 --dense_sample --full_res -j 8
