"""Null baselines: trivial maps scored by the same metrics, so every effect has a reference.

``random``
    i.i.d. uniform noise, seeded per image (``seed``, set name, image index): the same image
    always gets the same map, whatever the batching.
``sobel``
    The image's edge magnitude (Sobel, as ``skimage.filters.sobel`` on image/255): what a map
    that ignores the model and only sees edges scores.
``center``
    A centred Gaussian (sigma = a quarter of the side): what a centre bias alone scores.

Examples
--------
>>> import numpy as np
>>> images = np.zeros((2, 16, 16), np.uint8); images[:, 4:8, 4:8] = 255
>>> maps = baseline_maps("sobel", images, index=np.arange(2), set_name="base", seed=0)
>>> maps.shape, float(maps[0, 0, 0]), bool(maps[0, 4, 4] > 0)
(torch.Size([2, 16, 16]), 0.0, True)
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

BASELINES = ("random", "sobel", "center")
CENTER_SIGMA = 0.25  # of the image side


def random_maps(index, size: int, set_name: str, seed: int) -> torch.Tensor:
    """Uniform [0, 1) noise maps, one seeded generator per image (independent of batching)."""
    salt = zlib.crc32(set_name.encode())
    maps = np.empty((len(index), size, size), np.float32)
    for row, image in enumerate(np.asarray(index)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, salt, int(image)]))
        maps[row] = rng.random((size, size), dtype=np.float32)
    return torch.from_numpy(maps)


def sobel_maps(images) -> torch.Tensor:
    """Sobel edge magnitude of uint8 images (N, H, W), batched in torch.

    Matches ``skimage.filters.sobel(image / 255)``: kernels ``[1, 2, 1] / 4`` x ``[1, 0, -1]``,
    magnitude ``sqrt((gx**2 + gy**2) / 2)``, borders reflected (``replicate`` for a 1-px pad).
    """
    x = torch.as_tensor(np.asarray(images)).to(torch.float32)[:, None] / 255.0
    smooth = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    diff = torch.tensor([1.0, 0.0, -1.0])
    kernels = torch.stack([torch.outer(diff, smooth), torch.outer(smooth, diff)])[:, None]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, kernels.to(x.device))
    return torch.sqrt((gradients ** 2).sum(1) / 2.0)


def center_maps(n: int, size: int, sigma: float = CENTER_SIGMA) -> torch.Tensor:
    """A centred Gaussian of ``sigma * size`` px, repeated for ``n`` images."""
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2.0
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2.0 * (sigma * size) ** 2))
    return blob.expand(n, size, size).contiguous()


def baseline_maps(name: str, images, index, set_name: str, seed: int) -> torch.Tensor:
    """Maps of null baseline ``name`` for uint8 ``images`` (N, H, W), probe indices ``index``."""
    images = np.asarray(images)
    if name == "random":
        return random_maps(index, images.shape[-1], set_name, seed)
    if name == "sobel":
        return sobel_maps(images)
    if name == "center":
        return center_maps(len(images), images.shape[-1])
    raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
