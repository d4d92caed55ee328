"""Detection training throughput: bob's Mask R-CNN on a bob backbone vs torchvision's own.

Both detectors are the same architecture: ResNet-50 → FPN (strides 4–32 + a max-pooled stride 64)
→ RPN (anchors 32–512, three aspect ratios) → TwoMLPHead box head and the four-conv mask head,
91 classes, random weights. The only difference is the path to the pyramid:

  torchvision  `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`: IntermediateLayerGetter
               over the ResNet (BatchNorm in train mode, all layers trainable, as torchvision does
               without pretrained weights);
  bob          `bob.tasks.common.rcnn.build_detector` on `torchvision/resnet50 --weights random`:
               the bob backbone's `forward_features` (forward hooks that stop the pass after the
               last level) feeding torchvision's FeaturePyramidNetwork. `--norm-eval` freezes its
               BatchNorm statistics (bob's default for fine-tuning); off here, to match torchvision.

Timed: full training steps (forward, backward, AdamW step) on one fixed batch of random images and
random boxes/masks, identical for both, at a fixed square size. After warm-up, `--repeats` rounds
alternate the order (tv, bob, bob, tv, …); the median images/s of each gives **bob/torchvision**.

    python bench/detection_throughput.py            # CUDA if available: 800 px, batch 4 (~1-2 min on a GPU)
    python bench/detection_throughput.py --amp      # float16 autocast + GradScaler
    python bench/detection_throughput.py --quick    # CPU smoke: 128 px, batch 1, 2 iterations
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from _common import BUSY_THRESHOLD, ForeignLoad, describe_foreign

NUM_CLASSES = 91  # COCO's, background included, as torchvision's model zoo builds it
TARGET = 0.95


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> tuple[list, list]:
    """Random images and 3–8 random boxes per image, each with a filled-rectangle mask."""
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        n = int(torch.randint(3, 9, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * size * 0.7
        wh = 16 + torch.rand(n, 2, generator=gen) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
        masks = torch.zeros(n, size, size, dtype=torch.uint8)
        for j, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
            masks[j, y0:y1, x0:x1] = 1
        labels = torch.randint(1, NUM_CLASSES, (n,), generator=gen)
        images.append(torch.rand(3, size, size, generator=gen).to(device))
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device)})
    return images, targets


def torchvision_model(size: int) -> torch.nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, min_size=size, max_size=size
    )


def bob_model(size: int, norm_eval: bool) -> torch.nn.Module:
    from bob.backbones import build_backbone
    from bob.tasks.common.rcnn import build_detector

    backbone = build_backbone("torchvision/resnet50", "random")
    return build_detector(backbone, NUM_CLASSES - 1, masks=True, image_size=size, norm_eval=norm_eval)


def make_step(model: torch.nn.Module, batch: tuple[list, list], device: torch.device, amp: bool) -> Callable:
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    images, targets = batch

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable, iters: int, batch: int, device: torch.device) -> float:
    """Images per second over `iters` training steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return iters * batch / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--image-size", type=int, default=None, help="square input side (default 800; quick 128)"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default 4; quick 1)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per round (default 20; quick 2)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per model (default 5; quick 1)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="rounds per model (default 4; quick 1)")
    parser.add_argument("--amp", action="store_true", help="float16 autocast with loss scaling (CUDA)")
    parser.add_argument(
        "--norm-eval", action="store_true", help="freeze BatchNorm statistics in bob's backbone"
    )
    parser.add_argument("--quick", action="store_true", help="tiny CPU-friendly settings")
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cudnn autotune convolutions (off: shapes vary)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    quick = args.quick
    size = args.image_size or (128 if quick else 800)
    batch_size = args.batch_size or (1 if quick else 4)
    iters = args.iters or (2 if quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    repeats = args.repeats or (1 if quick else 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    # Off by default: the RoI heads see a different number of boxes every step, and cudnn's
    # autotuner would re-tune each new shape inside the timed steps.
    torch.backends.cudnn.benchmark = args.cudnn_benchmark and device.type == "cuda"
    amp = args.amp and device.type == "cuda"

    import torchvision

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    gpu = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"device {device} ({gpu}); {size}x{size} px, batch {batch_size}, {iters} timed steps x {repeats} "
        f"rounds after {warmup} warm-up steps; amp {'on' if amp else 'off'}; bob norm_eval {args.norm_eval}"
    )

    batch = make_batch(batch_size, size, device)
    torch.manual_seed(0)
    models = {"torchvision": torchvision_model(size), "bob": bob_model(size, args.norm_eval)}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    trainable = {k: sum(p.numel() for p in m.parameters() if p.requires_grad) for k, m in models.items()}
    steps = {k: make_step(m, batch, device, amp) for k, m in models.items()}
    for key, step in steps.items():
        for _ in range(warmup):
            step()
        sync(device)
        print(f"  {key:<12} params {params[key]:,} (trainable {trainable[key]:,}); warmed up")

    rates: dict[str, list[float]] = {k: [] for k in steps}
    with ForeignLoad() as load:
        for r in range(repeats):
            order = list(steps) if r % 2 == 0 else list(steps)[::-1]
            for key in order:
                rates[key].append(timed(steps[key], iters, batch_size, device))
    print(f"\n{'model':<12} {'img/s per round':<40} {'median':>8}")
    for key, values in rates.items():
        listing = " ".join(f"{v:.2f}" for v in values)
        print(f"{key:<12} {listing:<40} {statistics.median(values):>8.2f}")
    ratio = statistics.median(rates["bob"]) / statistics.median(rates["torchvision"])
    per_round = [b / t for b, t in zip(rates["bob"], rates["torchvision"], strict=True)]
    print(f"\nothers (foreign CPU load, cores): {describe_foreign(load.cores)}")
    if load.cores is not None and load.cores > BUSY_THRESHOLD and device.type == "cpu":
        print("WARNING: other processes were busy during the measurement; CPU timings are unreliable.")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"bob/torchvision images/s: {ratio:.3f} (per round: {', '.join(f'{r:.3f}' for r in per_round)}); "
        f"target >= {TARGET}: {verdict}"
    )
    if params["bob"] != params["torchvision"]:
        print(f"note: parameter counts differ by {params['bob'] - params['torchvision']:,}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
