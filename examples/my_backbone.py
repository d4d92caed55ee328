"""A backbone of your own, in one file. Check it, then benchmark it:

bob check --backbone examples/my_backbone.py:tiny_convnet --weights random
bob run   --backbone examples/my_backbone.py:tiny_convnet --weights random --task linear-probe/shapes
"""

from torch import nn


def tiny_convnet(weights: str = "random"):
    """Four conv stages (strides 2..16) ending in a feature map; bob pools it and finds the stages."""
    if weights != "random":
        raise ValueError("tiny_convnet has no pretrained weights; use --weights random")

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    model = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 128), stage(128, 256))
    meta = {"input_size": 64, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "family": "cnn"}
    return model, meta
