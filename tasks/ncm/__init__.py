"""`ncm/<dataset>`: the nearest class mean on frozen pooled features (SimpleShot's classifier).

SimpleShot (Wang et al., 2019) classifies by the closest class centroid after "CL2N": subtract the
mean train feature, then L2-normalise. No training and no hyper-parameter: a baseline between kNN
(every train feature votes) and the linear probe (a learned head). `normalize=l2` skips the
centring, `none` uses raw features. Metrics: top-1, top-5 and mean per-class recall.
"""

from __future__ import annotations

from dataclasses import dataclass

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg

NORMALIZATIONS = ("cl2n", "l2", "none")


@dataclass
class NcmArgs(TaskArgs):
    normalize: str = run_arg("cl2n", "feature transform before the centroids: cl2n | l2 | none")

    def validate(self) -> None:
        super().validate()
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got '{self.normalize}'.")


class Ncm(Task):
    suite = "ncm"
    version = "1"
    main_metric = "top1"
    reads_feature_cache = True
    description = (
        "frozen pooled features; nearest class mean after centring and L2 normalisation (SimpleShot)"
    )
    Args = NcmArgs
