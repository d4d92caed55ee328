"""`retrieval/<dataset>`: image retrieval with frozen, L2-normalised pooled features and cosine ranking.

No training (BoB's protocol, `main_ret.py`): every query is scored against every database image by the
dot product of L2-normalised pooled features, and the database is ranked by that score (ties: lower
database index first). Metrics: mAP, MRR, precision@k and recall@k, k in (1, 5, 10) by default; see
metrics.py for the exact definitions and the two AP conventions.

Two kinds of dataset, one suite:

- **retrieval datasets** (task type "retrieval": revisited Oxford/Paris, Copydays, the generated
  `skimage-views`) bring one `test` split, queries first and database after, with their own ground
  truth (bob.data.relevance). The revisited Oxford/Paris sets are scored with the Medium protocol
  (easy + hard relevant, junk removed from the ranking) and the revisited-Oxford conventions; their
  queries are cropped to their box unless `crop_queries=false` (BoB used whole images).
- **classification datasets** become class-as-relevance retrieval sets (BoB's "TwoLevel" protocol for
  CUB-200, iNat, INSTRE, ObjectNet): the images of the `pool` splits (default train + test, whose
  features the linear probe and k-NN already cached) are sorted by file name within each class (in-memory
  sets: by split, then index); optionally only the first `max_per_class` are kept; the first
  floor(`query_fraction` · n) of each class are queries and the rest is the database. Relevant = same class.

`protocol=bob` reproduces BoB's retrieval code knob by knob where bob's building blocks allow (see
queries.py and metrics.py, and docs/suites/retrieval.md for the table): whole-image queries, ROxford/
RParis images shrunk to fit 224 px before the transform, BoB's transform (bicubic Resize 256 ->
CenterCrop 224 with ImageNet statistics), the revisitop AP and P@k on every dataset, and BoB's MRR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bob.errors import UsageError
from bob.task import Task, TaskArgs, run_arg
from bob.tasks.common.args import check_protocol, protocol_arg

# The AP / precision@k conventions of metrics.py.
CONVENTIONS = ("standard", "revisitop")
# Datasets whose queries carry a box (revisited Oxford / Paris).
BOXED_QUERY_DATASETS = frozenset({"roxford5k", "rparis6k"})


@dataclass
class RetrievalArgs(TaskArgs):
    convention: str = run_arg(
        "auto", "metric convention: standard | revisitop | auto (revisitop on roxford5k/rparis6k)"
    )
    ks: tuple[int, ...] = run_arg((1, 5, 10), "cut-offs k of precision@k and recall@k, e.g. 1,5,10")
    query_fraction: float = run_arg(0.2, "class-as-relevance: share of each class (floored) used as queries")
    max_per_class: int | None = run_arg(
        None,
        "class-as-relevance: keep the first N sorted images per class (BoB: iNat 5, INSTRE/ObjectNet 50)",
    )
    pool: tuple[str, ...] | None = run_arg(
        None, "class-as-relevance: splits pooled into one retrieval set (default: train,test)"
    )
    protocol: str = protocol_arg(
        "default (bob's) | bob: BoB's retrieval knobs (whole-image queries, BoB's transform and "
        "ROxford/RParis thumbnails, revisitop AP everywhere, BoB's MRR)"
    )
    crop_queries: bool | None = run_arg(
        None,
        "roxford5k/rparis6k: crop each query to its box (default protocol) or use the whole image "
        "(protocol=bob, as BoB did); default: the protocol's choice",
        omit_default=True,
    )

    def validate(self) -> None:
        super().validate()
        if self.convention not in ("auto", *CONVENTIONS):
            raise UsageError(f"convention must be auto, {' or '.join(CONVENTIONS)}; got '{self.convention}'.")
        if not self.ks or any(k < 1 for k in self.ks):
            raise UsageError(f"ks must be positive integers, e.g. ks=1,5,10; got {self.ks}.")
        if not 0.0 < self.query_fraction < 1.0:
            raise UsageError(f"query_fraction must be in (0, 1), got {self.query_fraction}.")
        if self.max_per_class is not None and self.max_per_class < 2:
            raise UsageError(
                f"max_per_class must be at least 2 (a query and a database image), got {self.max_per_class}."
            )
        if self.pool is not None and not self.pool:
            raise UsageError("pool names no split; give e.g. pool=train,test.")
        check_protocol(self.protocol)
        if self.protocol == "bob" and self.image_size is not None:
            raise UsageError(
                "protocol=bob uses BoB's resolution (Resize 256 -> CenterCrop 224; 400 -> 384 and "
                "460 -> 448 for 384 / 448 px backbones); drop image_size or use protocol=default."
            )

    def queries_cropped(self) -> bool:
        """Whether ROxford/RParis queries are cropped to their box: the arg, else the protocol's choice."""
        return self.crop_queries if self.crop_queries is not None else self.protocol == "default"


class Retrieval(Task):
    suite = "retrieval"
    version = "1"
    main_metric = "map"
    reads_feature_cache = True
    task_types: ClassVar[tuple[str, ...]] = ("retrieval", "classification")
    description = (
        "frozen L2-normalised features, cosine ranking; mAP, MRR, P@k, R@k (classes as relevance on "
        "classification sets)"
    )
    Args = RetrievalArgs
    args: RetrievalArgs
