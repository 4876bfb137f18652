#!/usr/bin/env bash
# TSM README baseline: TSN ResNet-50 on Kinetics-400, 5 segments, no shift (released as
# TSM_kinetics_RGB_resnet50_avg_segment5_e50.pth; published 70.6 top-1 with 10 clips x 3 crops).
set -euo pipefail
python main.py kinetics RGB --arch resnet50 --num_segments 5 --gd 20 --lr 0.02 --wd 1e-4 \
  --lr_steps 20 40 --epochs 50 --batch-size ${BATCH:-128} -j ${WORKERS:-16} --dropout 0.5 \
  --consensus_type=avg --eval-freq=1 --npb ${EXTRA:-}
