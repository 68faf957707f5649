"""Speed of the BraTS bundle against plain PyTorch: prints a markdown table.

    python benchmarks/brats_speed.py [--iterations 20] [--dataset_dir DIR]

1. training steps/s: the bundle's ``SupervisedTrainer`` built from ``configs/train.json`` (its cached slice-patch
   dataset, augmentation, data loader, focal loss, AMP on GPU) vs a bare PyTorch loop on the same network, loss,
   optimiser and batch size over one fixed in-memory batch (no data loading at all: the ceiling);
2. whole-volume inference on a 240x240x155 case: the bundle's ``SliceInferer`` (128x128 windows, overlap 0.125,
   64 windows a batch from many slices, ``torch.inference_mode``) vs the naive loop over axial slices with the same
   windows, one window a forward pass, under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brats_mri_slice_segmentation"
sys.path.insert(1, str(BUNDLE))  # the configs reach the bundle's own code as `scripts.*`, as `monai.bundle run` does


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bundle_trainer_steps_per_s(iterations: int, overrides: dict) -> tuple[float, torch.nn.Module, dict]:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    parser["train#handlers"] = []  # no validation, logging or checkpoints: the training step alone
    parser["train#key_metric"] = None
    parser["train#trainer#epoch_length"] = iterations
    parser["train#trainer#max_epochs"] = 2
    trainer = parser.get_parsed_content("train#trainer")
    device = parser.get_parsed_content("device")
    times = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: (_sync(device), times.append(time.perf_counter())))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (_sync(device), times.append(time.perf_counter())))
    trainer.run()
    # the second epoch: data loader workers and caches are warm
    config = {k: parser.get_parsed_content(k) for k in ("amp", "device")}
    config["batch_size"] = parser.get_parsed_content("train#dataloader#batch_size")
    config["patch_size"] = parser.get_parsed_content("patch_size")
    return iterations / (times[3] - times[2]), parser.get_parsed_content("network"), config


def bare_loop_steps_per_s(network: torch.nn.Module, iterations: int, config: dict) -> float:
    from monai.losses import FocalLoss

    device, amp = config["device"], config["amp"]
    x = torch.randn(config["batch_size"], 3, *config["patch_size"], device=device)
    y = torch.randint(0, 4, (config["batch_size"], 1, *config["patch_size"]), device=device)
    loss_fn = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, weight_decay=1e-5)
    scaler = torch.amp.GradScaler(enabled=amp)
    network.train()
    for i in range(iterations + 3):
        if i == 3:
            _sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(network(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    return iterations / (time.perf_counter() - start)


def volume_inference_seconds(network: torch.nn.Module, device: torch.device) -> tuple[float, float]:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE)})
    inferer = parser.get_parsed_content("inferer")
    roi_size = parser.get_parsed_content("patch_size")  # SliceInferer makes its own roi_size 3D when it runs
    volume = torch.randn(1, 3, 240, 240, 155, device=device).clamp(-1, 1)
    network.eval()
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        bundle_out = inferer(volume, network)
        _sync(device)
        bundle_s = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        naive_out = torch.stack(
            [
                sliding_window_inference(volume[..., z], roi_size, 1, network, overlap=inferer.overlap,
                                         mode=inferer.mode, cval=-1.0)
                for z in range(volume.shape[-1])
            ],
            dim=-1,
        )
        _sync(device)
        naive_s = time.perf_counter() - start
    assert bundle_out.shape == naive_out.shape == (1, 4, 240, 240, 155)
    return bundle_s, naive_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20, help="timed training iterations (after a warm-up epoch)")
    ap.add_argument("--dataset_dir", default=None, help="BraTS folder; default: the bundle's demo data")
    args = ap.parse_args()
    overrides = {}
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    bundle_sps, network, config = bundle_trainer_steps_per_s(args.iterations, overrides)
    bare_sps = bare_loop_steps_per_s(network, args.iterations, config)
    bundle_s, naive_s = volume_inference_seconds(network, config["device"])
    device = config["device"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nBraTS bundle speed on {name}, torch {torch.__version__}, batch {config['batch_size']} of "
          f"{tuple(config['patch_size'])}, AMP {config['amp']}\n")
    print("| measurement | bundle | plain PyTorch | bundle / plain |")
    print("|---|---|---|---|")
    print(f"| training steps/s (bundle trainer + data pipeline vs bare loop on one fixed batch) | {bundle_sps:.2f} | "
          f"{bare_sps:.2f} | {bundle_sps / bare_sps:.2f} |")
    print(f"| 240x240x155 whole-volume inference, s (batched SliceInferer vs per-slice, per-window loop) | {bundle_s:.1f} | "
          f"{naive_s:.1f} | {bundle_s / naive_s:.2f} |")


if __name__ == "__main__":
    main()
