"""`reid/<dataset> mode=finetune`: a BNNeck re-ID embedding trained end to end (Luo et al.'s strong baseline).

Model: backbone `forward_pooled` → BatchNorm1d (the "neck", its shift frozen at 0) → bias-free linear
classifier over the training identities. Loss: label-smoothed cross-entropy on the classifier logits
plus `triplet_weight` × batch-hard triplet loss (Hermans et al.; Euclidean, `margin`) on the pooled
features before the neck. Batches hold P identities × K images, drawn like torchreid's
`RandomIdentitySampler` (each identity's images shuffled and cut into chunks of K, the last chunk filled
by resampling; P identities with chunks left are picked at random until fewer than P remain). Adam with a
one-epoch linear warm-up and cosine decay to 0, stepped per batch. Training transform: resize to the
task resolution, random horizontal flip, zero-pad by 1/16 + random crop, colour jitter 0.2 (AdvStyle's
flip + colour jitter). Queries and gallery are embedded with the neck's (BatchNorm'd) features.

The training split is this dataset's `train`, or `train_on`'s (cross-domain: train on Market-1501,
evaluate on DukeMTMC-reID, as AdvStyle does). Identities are relabelled 0..N-1 in sorted order.

Data-parallel (`bob run --gpus-per-run N`), every rank draws the same batch plan from the same seeded
generator, so every rank takes the same steps, and each step's P×K batch is split by whole identities:
rank r takes identities r·P/N … (r+1)·P/N − 1 of it, K images each, so the batch-hard triplet loss has
positives (and, with two identities or more a rank, negatives) on every rank; its hardest examples are
mined within the rank's share. Each rank's augmentation draws from its own stream (seed + rank). The
BatchNorm layers, the neck's included, keep per-rank statistics while training; rank 0's running
statistics are copied to every rank before the embedding, so each rank embeds its shard of the test
split with the same model and the gathered features are those of one process.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from bob import distributed
from bob.backbones.base import Backbone, pooled_width
from bob.backbones.meta import DataConfig
from bob.context import RunContext
from bob.data import load_split
from bob.data.base import ImageSplit
from bob.errors import UsageError
from bob.features import split_batches
from bob.progress import Progress, progress_bar
from bob.tasks.common.data_parallel import rank, record, world_size
from bob.tasks.common.train_loop import AfterStep, TrainLoop, data_parallel
from bob.tasks.reid import ReidArgs
from bob.tasks.reid.data import reid_arrays

JITTER = 0.2


class BNNeckEmbedding(nn.Module):
    def __init__(self, backbone: Backbone, num_ids: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_ids, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.backbone.forward_pooled(x)
        return feat, self.classifier(self.neck(feat))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone.forward_pooled(x))


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(relu(d(a, hardest positive) − d(a, hardest negative) + margin)), Euclidean distances."""
    dist = torch.cdist(feat, feat)
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, 0.0).amax(dim=1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def identity_batches(labels: np.ndarray, p: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of P×K batches (torchreid's RandomIdentitySampler; see the module docstring)."""
    chunks: dict[int, list[np.ndarray]] = {}
    for pid in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == pid))
        if len(members) < k:
            members = rng.choice(members, k, replace=True)
        usable = len(members) // k * k
        chunks[int(pid)] = [members[i : i + k] for i in range(0, usable, k)]
    available = sorted(chunks)
    batches = []
    while len(available) >= p:
        chosen = rng.choice(available, p, replace=False)
        batches.append(np.concatenate([chunks[int(pid)].pop() for pid in chosen]))
        available = [pid for pid in available if chunks[pid]]
    return batches


def train_transform(cfg: DataConfig) -> T.Compose:
    size = cfg.input_size
    return T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode(cfg.interpolation)),
            T.RandomHorizontalFlip(),
            T.Pad(max(1, size // 16)),
            T.RandomCrop(size),
            T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
            T.ToTensor(),
            T.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        ]
    )


def training_split(ctx: RunContext, args: ReidArgs) -> tuple[str, ImageSplit]:
    if args.train_on is None or args.train_on == ctx.dataset:
        return ctx.dataset, ctx.split("train")
    split = load_split(args.train_on, "train", root=ctx.spec.data_root, download=ctx.spec.download)
    return args.train_on, split


def _schedule(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _embed(ctx: RunContext, model: BNNeckEmbedding, split: ImageSplit, bar: Progress) -> np.ndarray:
    """The neck features [N, D] of `split`, in its order. Data-parallel, each rank embeds its shard
    of the rows (`bar` counts them) and the shards are gathered back in order (exact: rows are
    moved, not recomputed)."""
    rows = distributed.shard(len(split))
    local_split = split if len(rows) == len(split) else split.subset(np.asarray(rows), split.split)
    out = [np.zeros((0, model.neck.num_features), dtype=np.float32)]  # a rank with no row
    model.eval()
    with torch.inference_mode():
        for x in split_batches(local_split, ctx.data_config, ctx.batch_size, ctx.num_workers, ctx.device):
            out.append(model.embed(x.to(ctx.device)).float().cpu().numpy())
            bar.advance(len(x))
    return distributed.gather_rows(np.concatenate(out), rows, len(split))


def _model(ctx: RunContext, num_ids: int) -> BNNeckEmbedding:
    backbone = ctx.build_backbone()
    trainable = {id(p) for p in backbone.trainable().parameters()}
    if not trainable:
        raise UsageError(f"{backbone.meta.name}: trainable() has no parameters; it cannot be fine-tuned.")
    for param in backbone.parameters():
        param.requires_grad_(id(param) in trainable)
    dim = pooled_width(backbone, ctx.data_config.input_size)
    return BNNeckEmbedding(backbone, num_ids, dim).to(ctx.device)


def finetune_embedding(
    ctx: RunContext, args: ReidArgs, test: ImageSplit
) -> tuple[np.ndarray, dict[str, object]]:
    """Train the BNNeck embedding, then embed the test split (queries and gallery); returns the features
    and the protocol."""
    train_name, train = training_split(ctx, args)
    pids, _ = reid_arrays(train)
    ids = np.unique(pids)
    if len(ids) < args.ids_per_batch:
        raise UsageError(
            f"'{train_name}' has {len(ids)} training identities, fewer than ids_per_batch={args.ids_per_batch}; "
            "lower ids_per_batch."
        )
    ids_per_rank = identities_per_rank(args)
    labels = np.searchsorted(ids, pids)
    rng = np.random.default_rng(ctx.seed)
    torch.manual_seed(ctx.seed)
    model = _model(ctx, len(ids))
    if distributed.active():
        torch.manual_seed(ctx.seed + rank())  # each rank's augmentation stream (module docstring)
    # Every epoch's P×K batches are drawn up front, epoch after epoch, from the one seeded generator
    # (the same plan on every rank of a data-parallel run).
    plan = [identity_batches(labels, args.ids_per_batch, args.images_per_id, rng) for _ in range(args.epochs)]
    loop = _train(ctx, args, model, (train_name, train, labels), plan)
    with progress_bar("embedding queries and gallery", len(distributed.shard(len(test))), "images") as bar:
        features = _embed(ctx, model, test, bar)
    protocol = {
        "features": "BNNeck embedding (pooled → BatchNorm1d), backbone fine-tuned",
        "train_on": train_name,
        "cross_domain": train_name != ctx.dataset,
        "num_train_ids": len(ids),
        "num_train_images": len(pids),
        "epochs": args.epochs,
        "steps": loop.step,
        "batch": f"{args.ids_per_batch} identities × {args.images_per_id} images (RandomIdentitySampler)",
        "optimizer": f"Adam lr={args.lr}, weight_decay={args.weight_decay}, 1-epoch linear warm-up, cosine to 0",
        "loss": f"cross-entropy (label smoothing {args.label_smoothing}) + {args.triplet_weight} × batch-hard "
        f"triplet (margin {args.margin}) on pre-neck features",
        "augmentation": f"resize, horizontal flip, pad {max(1, ctx.data_config.input_size // 16)} + random crop, "
        f"colour jitter {JITTER}",
        "image_size": ctx.data_config.input_size,
        "final_epoch_loss": float(np.mean(loop.epoch_losses[-1])),
    }
    shards = record(
        args.ids_per_batch * args.images_per_id,
        per_device_identities=ids_per_rank,
        split=f"each P×K batch by whole identities: {ids_per_rank} identities × {args.images_per_id} "
        "images a rank, from the same batch plan (seed) on every rank",
        triplet_mining="batch-hard within each rank's identities",
        evaluation="each rank embeds its shard of queries and gallery; features gathered in order",
    )
    if shards is not None:
        protocol["data_parallel"] = shards
    return features, protocol


def identities_per_rank(args: ReidArgs) -> int:
    """The identities of each step's batch a rank trains on: all P in one process; P / world
    data-parallel, a usage error unless the ranks divide P, or when a rank's share would have no
    negative for the triplet loss."""
    world = world_size()
    if args.ids_per_batch % world:
        raise UsageError(
            f"a data-parallel run of {world} ranks splits each step's batch by whole identities: "
            f"ids_per_batch={args.ids_per_batch} must be a multiple of {world}."
        )
    share = args.ids_per_batch // world
    if share < 2 and args.triplet_weight > 0:
        raise UsageError(
            f"a data-parallel run of {world} ranks gives each rank {share} of the ids_per_batch="
            f"{args.ids_per_batch} identities: the batch-hard triplet loss needs 2 or more a rank "
            f"(negatives). Use ids_per_batch={2 * world} or more, or triplet_weight=0."
        )
    return share


def rank_share(batch: np.ndarray, share: int, k: int) -> np.ndarray:
    """This rank's part of a P×K batch (P chunks of K images, one identity each): the `share`
    identities from rank × share on. The whole batch in one process."""
    if world_size() == 1:
        return batch
    start = rank() * share * k
    return batch[start : start + share * k]


def _train(
    ctx: RunContext,
    args: ReidArgs,
    model: BNNeckEmbedding,
    data: tuple[str, ImageSplit, np.ndarray],
    plan: list[list[np.ndarray]],
) -> TrainLoop:
    """Adam over the planned batches (`data`: the training set's name, split and 0..N-1 labels), the
    warm-up + cosine factor stepped after every optimizer step. Data-parallel, each rank trains on
    its identities of every batch (`rank_share`) through the DDP-wrapped model."""
    name, train, labels = data
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    total, warmup = sum(len(batches) for batches in plan), len(plan[0])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, warmup, total))
    transform = train_transform(ctx.data_config)
    net = data_parallel(model)  # the model itself in one process
    share = identities_per_rank(args)

    def loss_of(batch: np.ndarray) -> torch.Tensor:
        batch = rank_share(batch, share, args.images_per_id)
        # The random augmentation draws from torch's global generator here, right before the forward.
        x = torch.stack([transform(train.image(int(i))) for i in batch]).to(ctx.device)
        y = torch.as_tensor(labels[batch], device=ctx.device)
        feat, logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
        if args.triplet_weight > 0:
            loss = loss + args.triplet_weight * batch_hard_triplet(feat, y, args.margin)
        return loss

    return TrainLoop(
        net,
        optimizer,
        loss_of,
        lambda epoch: plan[epoch - 1],
        device=ctx.device,
        epochs=args.epochs,
        hooks=[AfterStep(lambda _: scheduler.step())],
        what=f"the re-ID embedding on {name}",
        hint=f"lower lr (now {args.lr})",
        total_steps=total,  # the epochs' batch counts vary (RandomIdentitySampler)
    ).run()
