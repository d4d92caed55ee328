"""`segmentation/<dataset>`: semantic segmentation with any bob backbone, scored by dataset-accumulated mIoU.

Modules: `data` (label-map splits, the generated scenes' semantic maps, mask validation), `real`
(ADE20K, Cityscapes and Pascal VOC 2012 layouts), `metrics` (mIoU / aAcc / mAcc, mmseg's definition),
`heads` (Semantic FPN, FCN and linear heads on the backbone), `train` (training loop and inference)
and `task` (the Task). Nothing here imports torch at import time.
"""
