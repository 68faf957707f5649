"""A classifier two-sample test: can a small CNN tell two sets of images apart?

Lopez-Paz D, Oquab M. Revisiting Classifier Two-Sample Tests. ICLR 2017. The two sets are split into ``folds``
stratified folds; for each fold a fresh ``monai.networks.nets.Classifier`` is trained on the other folds to tell the
sets apart, and scored on the fold. The accuracy over all held-out predictions is about 0.5 when the sets come from
one distribution and 1.0 when they are told apart every time.
"""

from __future__ import annotations

import math

import torch
from monai.networks.nets import Classifier

__all__ = ["classifier_two_sample_test"]


def _train(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int,
           lr: float, generator: torch.Generator) -> None:
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            if len(batch) < 2:  # batch norm needs two images
                continue
            optimizer.zero_grad()
            loss_fn(network(images[batch]).flatten(), labels[batch]).backward()
            optimizer.step()


def classifier_two_sample_test(first: torch.Tensor, second: torch.Tensor, folds: int = 4, epochs: int = 15,
                               batch_size: int = 16, lr: float = 1e-3, channels: tuple[int, ...] = (8, 16, 32, 32),
                               seed: int = 0, device: torch.device | str = "cpu") -> dict:
    """The cross-validated accuracy of telling ``first`` from ``second`` ((N, C, H, W) each; the larger set is cut
    to the smaller one's size so that chance is 0.5). Returns ``accuracy``, the per-fold accuracies, the set size
    ``n`` (per set) and ``chance_sd``, the standard deviation of the accuracy of a coin toss on ``2 n`` images.
    The global random state is left as it was."""
    n = min(len(first), len(second))
    if n < folds:
        raise ValueError(f"a {folds}-fold two-sample test needs at least {folds} images a set, not {n}.")
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(f"the two sets' images differ in shape: {tuple(first.shape[1:])} vs {tuple(second.shape[1:])}.")
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat((first[:n], second[:n])).float().to(device)
    labels = torch.cat((torch.zeros(n), torch.ones(n))).to(device)
    # the i-th image of each set falls in the same fold, so that an image present in both sets is never learnt
    # with one label and tested with the other
    parts = [torch.cat((fold, fold + n)) for fold in torch.randperm(n, generator=generator).chunk(folds)]
    correct, fold_accuracies = 0, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for k, test in enumerate(parts):
            train = torch.cat([p for j, p in enumerate(parts) if j != k])
            network = Classifier(in_shape=images.shape[1:], classes=1, channels=channels,
                                 strides=(2,) * len(channels), num_res_units=0, norm="batch").to(device)
            _train(network, images[train], labels[train], epochs, batch_size, lr, generator)
            network.eval()
            with torch.no_grad():
                hits = int(((network(images[test]).flatten() > 0).float() == labels[test]).sum())
            correct += hits
            fold_accuracies.append(hits / len(test))
    return {"accuracy": correct / (2 * n), "fold_accuracies": fold_accuracies, "n": n,
            "chance_sd": math.sqrt(0.25 / (2 * n))}
