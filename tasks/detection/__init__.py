"""`detection/<dataset>`: Mask R-CNN / Faster R-CNN with an FPN on any bob backbone, scored by COCOeval.

Modules: `data` (COCO-JSON splits and their validation), `scenes` (the generated scenes),
`model` (backbone → feature pyramid → torchvision detector), `train` (the training loop),
`evaluate` (pycocotools COCOeval) and `task` (the Task). Nothing here imports torch at import time.
"""
