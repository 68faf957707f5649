"""A parameter-free stand-in network for geometry tests: its label is a voxel-wise function of the input."""

import torch


class FlairThreshold(torch.nn.Module):
    """Class 2 (oedema) where channel 0 (FLAIR, rescaled to [-1, 1]) is above ``threshold``, else background."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] > self.threshold).float()
        zeros = torch.zeros_like(fg)
        return torch.cat([1 - fg, zeros, fg, zeros], dim=1)


class BrightSlice(torch.nn.Module):
    """One logit a pixel, positive where the (per-slice normalised) input is above ``threshold``."""

    def __init__(self, threshold: float = 1.0) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20.0 * (x[:, :1] - self.threshold)


class IdentityReconstruction(torch.nn.Module):
    """A VQ-VAE stand-in that reconstructs its input exactly, with a zero quantization loss, like ``VQVAE``'s
    ``(reconstruction, quantization_loss)``; its "codes" (``index_quantize``) are all code 0 of a 4-code book, and
    its one parameter is there only to give it a device."""

    num_embeddings = 4

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.clone(), torch.zeros(())

    def index_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.long, device=x.device)


class T2wChannel(torch.nn.Module):
    """A super-resolution stand-in that returns its input's T2w channel (channel 1) unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:2].clone()


class DarkNucleiHoVerNet(torch.nn.Module):
    """A HoVer-Net (fast mode) stand-in that sees nuclei where its input is dark: the connected components of
    pixels whose mean over the channels (in [0, 1]) is below ``threshold``, computed in each window it is given.
    It returns what a perfect HoVer-Net would for them, less 46 pixels a side like HoVer-Net fast (164 of 256):
    confident nucleus logits, their true horizontal / vertical maps (MONAI's ``ComputeHoVerMaps``) and type logits,
    type 1 (Neoplastic) for bluish nuclei (blue above red) and 2 (Inflammatory) for the others."""

    def __init__(self, threshold: float = 0.4, border: int = 46, num_classes: int = 6) -> None:
        super().__init__()
        self.threshold, self.border, self.num_classes = threshold, border, num_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        import numpy as np
        from monai.transforms import ComputeHoVerMaps
        from scipy import ndimage

        nuclei, hover, kinds = [], [], []
        for image in x.detach().float().cpu().numpy():
            labels = ndimage.label(image.mean(0) < self.threshold)[0]
            nuclei.append(labels > 0)
            hover.append(np.asarray(ComputeHoVerMaps()(labels[None]), np.float32))
            bluish = np.zeros(labels.max() + 1, bool)
            if labels.max():
                ids = np.arange(1, labels.max() + 1)
                blue, red = (np.asarray(ndimage.mean(image[c], labels, ids)) for c in (2, 0))
                bluish[1:] = blue > red
            kinds.append(np.where(labels > 0, np.where(bluish[labels], 1, 2), 0))
        b = self.border
        window = (slice(None), slice(None), slice(b, x.shape[-2] - b), slice(b, x.shape[-1] - b))

        def logits(labels, classes: int) -> torch.Tensor:
            one_hot = torch.nn.functional.one_hot(torch.as_tensor(np.stack(labels)).long(), classes)
            return 10.0 * one_hot.permute(0, 3, 1, 2).float()

        return {"nucleus_prediction": logits(nuclei, 2)[window].to(x.device),
                "horizontal_vertical": torch.as_tensor(np.stack(hover))[window].to(x.device),
                "type_prediction": logits(kinds, self.num_classes)[window].to(x.device)}


class IdentityGenerator(torch.nn.Module):
    """A translation stand-in that returns its input: its translation is the identity baseline itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()
