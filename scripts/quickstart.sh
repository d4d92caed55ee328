#!/usr/bin/env bash
# Set everything up, then run the main job: ImageNet-pretrained MobileNetV2 against the same
# architecture with random weights, as a linear probe and a k-NN on Animal-MNIST and as instance
# retrieval on generated views of CC0 photos, with the gaps; then build the leaderboard from the
# results on disk (results/leaderboard.{csv,md,html}).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # results and tests live in the repository
source scripts/setup.sh
bob run \
    --backbone torchvision/mobilenet_v2 \
    --weights pretrained --weights random \
    --task linear-probe/animal-mnist --task knn/animal-mnist --task retrieval/skimage-views \
    "$@"
bob leaderboard --top 10
