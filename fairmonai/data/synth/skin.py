"""2D skin-photo pieces shared by the ``isic2020`` and ``fitzpatrick17k`` cohorts.

Images are float ``(H, W, 3)`` RGB arrays in [0, 1] (written as 8-bit PNG). A lesion is
composited on the skin by absorption: ``skin * (1 - alpha + alpha * T)``, with ``alpha`` the soft
lesion mask and ``T`` its per-channel transmittance, so the same lesion gives a smaller absolute
contrast on darker skin, as in photographs.

A lesion outline is ``R(theta) = radius * (1 + sum_m a_m cos(m theta + phi_m))``, ``m = 2..6``;
``alpha = expit((R(theta) - r) / edge)``. Lesions stay at least ``H // 8`` pixels clear of the
image corners, so the four ``(H // 8, W // 8)`` corner blocks show skin and noise only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

__all__ = [
    "CORNER_FRACTION",
    "MALIGNANT_COLOURS",
    "lesion_centre",
    "illuminated_skin",
    "lesion_alpha",
    "smooth_field",
    "multicolour_transmittance",
    "composite",
    "finish_photo",
]

#: Corner blocks of ``(H // 8, W // 8)`` pixels are lesion-free.
CORNER_FRACTION = 8

#: Transmittances of the malignant colours: dark brown, blue-grey, light brown.
MALIGNANT_COLOURS = np.array([[0.30, 0.22, 0.20], [0.45, 0.48, 0.60], [0.66, 0.48, 0.40]])


def illuminated_skin(rng: np.random.Generator, shape, rgb, *, jitter: float = 0.03,
                     gradient: float = 0.05) -> np.ndarray:
    """Skin of colour ``rgb`` x U(1 - jitter, 1 + jitter) per channel under a linear illumination
    gradient of at most ``+- gradient``; ``(H, W, 3)``."""
    H, W = shape
    colour = np.asarray(rgb, dtype=np.float64) * rng.uniform(1.0 - jitter, 1.0 + jitter, size=3)
    a, b = rng.uniform(-1.0, 1.0, size=2)
    u = np.linspace(-1.0, 1.0, H)[:, None]
    v = np.linspace(-1.0, 1.0, W)[None, :]
    light = 1.0 + gradient * (a * u + b * v) / np.sqrt(2.0)
    return light[..., None] * colour[None, None, :]


def lesion_alpha(shape, centre, radius: float, amplitudes, phases, edge: float) -> np.ndarray:
    """Soft lesion mask ``(H, W)`` in [0, 1]: outline harmonics ``m = 2, 3, ...`` with the given
    amplitudes and phases, logistic edge of width ``edge`` pixels."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    r = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    outline = np.ones_like(r)
    for m, (a, p) in enumerate(zip(amplitudes, phases), start=2):
        outline += a * np.cos(m * theta + p)
    return expit((radius * outline - r) / edge)


def smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise of unit standard deviation, shape ``shape``."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return f / (f.std() + 1e-12)


def multicolour_transmittance(rng: np.random.Generator, shape, sharpness: float = 2.0) -> np.ndarray:
    """``(H, W, 3)`` transmittance mixing :data:`MALIGNANT_COLOURS` by a softmax of three smooth fields."""
    fields = np.stack([smooth_field(rng, shape, 3.0) for _ in range(3)], axis=-1) * sharpness
    fields[..., 0] += 1.0  # dark brown dominates
    w = np.exp(fields - fields.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    return w @ MALIGNANT_COLOURS


def composite(skin: np.ndarray, alpha: np.ndarray, transmittance) -> np.ndarray:
    """``skin * (1 - alpha + alpha * T)``; ``T`` is ``(3,)`` or ``(H, W, 3)``."""
    T = np.asarray(transmittance, dtype=np.float64)
    return skin * (1.0 - alpha[..., None] + alpha[..., None] * T)


def finish_photo(rng: np.random.Generator, img: np.ndarray, cue: np.ndarray, noise: float) -> np.ndarray:
    """Multiply by the stripe cue along the width (axis 1), add Gaussian noise of standard deviation
    ``noise`` per channel, clip to [0, 1]."""
    img = img * cue[None, :, None] + noise * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0)


def lesion_centre(rng: np.random.Generator, shape, jitter: float = 0.06) -> tuple[float, float]:
    """Image centre moved by up to ``jitter`` of each side."""
    H, W = shape
    return ((H - 1) / 2.0 + rng.uniform(-jitter, jitter) * H, (W - 1) / 2.0 + rng.uniform(-jitter, jitter) * W)
