"""A classifier two-sample test: can a small CNN tell two sets of images apart?

Lopez-Paz D, Oquab M. Revisiting Classifier Two-Sample Tests. ICLR 2017. The images of both sets are split into
``folds`` folds; for each fold a fresh classifier is trained on the other folds to tell the sets apart and scored on
the fold. The score is the balanced accuracy over all held-out predictions (the mean of each set's share classified
correctly): about 0.5 when the sets come from one distribution, 1.0 when they are told apart every time, and 0.5 for
a classifier that guesses, whatever the sets' sizes.

Images that belong together (the slices of one patient) are given one *group*: a group's images all fall in the same
fold, so the classifier is always scored on people it never saw. Without groups a classifier can learn who is in which
set (one man's build, noise level, intensity scale) and tell two sets of real slices from different men apart.

The classifier (:class:`TwoSampleClassifier`) is fully convolutional with global average pooling, so that it scores
what is in an image (texture, edges, doubled contours) rather than where it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["TwoSampleClassifier", "group_folds", "classifier_two_sample_test"]


class TwoSampleClassifier(nn.Sequential):
    """A convolution of stride ``first_stride`` (``channels[0]`` features), then one stride-2 convolution per
    further entry of ``channels``, each with batch norm and PReLU (MONAI's ``Convolution``), then global average
    pooling and one logit."""

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16, 32, 64), spatial_dims: int = 2,
                 first_stride: int = 2) -> None:
        layers: list[nn.Module] = [Convolution(spatial_dims, in_channels, channels[0], strides=first_stride,
                                               kernel_size=3, norm="batch")]
        for previous, current in zip(channels[:-1], channels[1:]):
            layers.append(Convolution(spatial_dims, previous, current, strides=2, kernel_size=3, norm="batch"))
        pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        super().__init__(*layers, pool, nn.Flatten(), nn.Linear(channels[-1], 1))


def group_folds(groups: Sequence, folds: int, order: Sequence) -> list[list[int]]:
    """The indices of the items with ``groups`` (one label an item) split into ``folds`` folds, whole groups in a
    fold: the groups taken largest first, ties in the order of ``order`` (every label, shuffled), each given to the
    fold with fewest items. Two sets with the same labels and group sizes get the same folds."""
    members: dict = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    rank = {label: i for i, label in enumerate(order)}
    parts: list[list[int]] = [[] for _ in range(folds)]
    for name in sorted(members, key=lambda g: (-len(members[g]), rank[g])):
        min(parts, key=len).extend(members[name])
    return parts


def _train(network: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int, lr: float,
           generator: torch.Generator) -> None:
    positives = float(labels.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - positives) / max(positives, 1.0),
                                                           device=images.device))
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    network.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            if len(batch) < 2:  # batch norm needs two images
                schedule.step()
                continue
            flip = torch.rand(len(batch), generator=generator) < 0.5  # left-right mirror: the body is symmetric
            x = images[batch]
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(2), x)
            optimizer.zero_grad()
            loss_fn(network(x).flatten(), labels[batch]).backward()
            optimizer.step()
            schedule.step()


def classifier_two_sample_test(first: torch.Tensor, second: torch.Tensor, folds: int = 5, epochs: int = 30,
                               batch_size: int = 16, lr: float = 2e-3, channels: Sequence[int] = (8, 16, 32, 64),
                               first_stride: int = 2,
                               first_groups: Sequence | None = None, second_groups: Sequence | None = None,
                               seed: int = 0, device: torch.device | str = "cpu") -> dict:
    """The cross-validated balanced accuracy of telling ``first`` from ``second`` ((N, C, H, W) each, any sizes).

    ``first_groups`` / ``second_groups`` (one label an image; default: the image's index) keep the images of a group
    in one fold; a label in both sets is in the same fold in both (the same image in both sets is never learnt with
    one label and tested with the other). Training mirrors images left-right at random (axis 2: the slices'
    first spatial axis runs left-right). Returns ``accuracy`` (balanced), ``fold_accuracies``, ``sizes`` (of the two
    sets), ``n`` (the smaller size) and ``chance_sd``, the standard deviation of a guessing classifier's balanced
    accuracy at these sizes. The global random state is left as it was."""
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"the two sets' images differ in shape: {tuple(first.shape[1:])} vs {tuple(second.shape[1:])}.")
    sizes = (len(first), len(second))
    groups = [list(first_groups) if first_groups is not None else list(range(sizes[0])),
              list(second_groups) if second_groups is not None else list(range(sizes[1]))]
    for size, labels, name in zip(sizes, groups, ("first", "second")):
        if len(labels) != size:
            raise ValueError(f"{name}_groups has {len(labels)} labels for {size} images.")
        if len(set(labels)) < folds:
            raise ValueError(f"a {folds}-fold two-sample test needs at least {folds} groups a set; the {name} set has "
                             f"{len(set(labels))}.")
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat((first, second)).float().to(device)
    labels = torch.cat((torch.zeros(sizes[0]), torch.ones(sizes[1]))).to(device)
    labels_in_order = list(dict.fromkeys(groups[0] + groups[1]))
    order = [labels_in_order[i] for i in torch.randperm(len(labels_in_order), generator=generator).tolist()]
    parts = [a + [sizes[0] + i for i in b] for a, b in zip(group_folds(groups[0], folds, order),
                                                          group_folds(groups[1], folds, order))]
    correct = torch.zeros(2)
    fold_accuracies = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k, test in enumerate(parts):
            train = torch.tensor([i for j, p in enumerate(parts) if j != k for i in p])
            test = torch.tensor(test)
            network = TwoSampleClassifier(images.shape[1], channels, images.ndim - 2, first_stride).to(device)
            _train(network, images[train], labels[train], epochs, batch_size, lr, generator)
            network.eval()
            with torch.no_grad():
                predicted = torch.cat([network(images[part]).flatten() > 0 for part in test.split(64)]).float().cpu()
            hits = predicted == labels[test].cpu()
            truth = labels[test].cpu().long()
            per_set = torch.stack([hits[truth == c].sum() for c in (0, 1)]).float()
            correct += per_set
            counts = torch.stack([(truth == c).sum() for c in (0, 1)]).clamp(min=1).float()
            fold_accuracies.append(float((per_set / counts).mean()))
    accuracy = float((correct / torch.tensor(sizes, dtype=torch.float)).mean())
    return {"accuracy": accuracy, "fold_accuracies": fold_accuracies, "sizes": list(sizes), "n": min(sizes),
            "chance_sd": 0.25 * math.sqrt(1 / sizes[0] + 1 / sizes[1])}
