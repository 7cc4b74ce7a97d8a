"""k-nearest-neighbour estimate of the mutual information I(u; v) between a discrete group code ``u``
and continuous values ``v`` (logits or features), in nats.

:func:`knn_mutual_information` is Ross's estimator (B. C. Ross, "Mutual Information between Discrete
and Continuous Data Sets", PLoS ONE 9(2), 2014), as scikit-learn's ``mutual_info_classif`` computes it,
per column (``"sum"``) or on the whole vector (``"joint"``). It is the shared curve that
:class:`fairmonai.handlers.PenaltyCurveLogger` logs during training for every method alike.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["knn_mutual_information", "KNN_MI_ESTIMATORS"]

#: the estimators of :func:`knn_mutual_information`.
KNN_MI_ESTIMATORS = ("sum", "joint")


def knn_mutual_information(
    v: np.ndarray | torch.Tensor,
    u: np.ndarray | torch.Tensor,
    *,
    n_neighbors: int = 3,
    random_state: int = 0,
    estimator: str = "sum",
    min_samples: int = 20,
) -> float:
    """k-NN estimate of the mutual information I(u; v) in nats, ``u`` discrete, ``v`` continuous.

    Samples with a negative code (``-1``: in no group) are dropped first. Both estimators are Ross's
    k-NN estimator for a discrete and a continuous variable (B. C. Ross, "Mutual Information between
    Discrete and Continuous Data Sets", PLoS ONE 9(2), 2014), on ``v`` scaled to unit variance per
    column with a 1e-10 jitter (as scikit-learn does):

    * ``"sum"`` (default): ``sklearn.feature_selection.mutual_info_classif(v, u,
      n_neighbors=n_neighbors, random_state=random_state).sum()``, i.e. the sum over the columns of
      ``v`` of I(u; v_j), each column estimated separately. It equals I(u; v) for one column (a
      binary classifier's logit); for several columns it ignores their dependence (it can
      over-count redundant columns and miss information held only jointly), so it is a proxy for
      wide feature layers.
    * ``"joint"``: the same estimator on the vector ``v`` as a whole (max-norm neighbourhoods),
      an estimate of I(u; v) itself; for one column it equals ``"sum"``. Its variance grows with
      the dimension, so prefer it for logits or small layers.

    Args:
        v: ``(N,)`` or ``(N, D)`` continuous values (more dimensions are flattened to ``(N, -1)``).
        u: ``(N,)`` integer group codes.
        n_neighbors: k of the k-NN estimator (scikit-learn's default is 3).
        random_state: seed of the jitter.
        estimator: ``"sum"`` or ``"joint"``.
        min_samples: fewer kept samples than this (or than ``n_neighbors + 1``) give NaN.

    Returns:
        The estimate (>= 0), or NaN when fewer than ``min_samples`` samples are left, fewer than two
        groups have at least two samples, or ``v`` holds NaN or infinity.

    Raises:
        ValueError: an unknown ``estimator``; ``v`` and ``u`` of different lengths.

    Example:
        >>> u = np.arange(200) % 2
        >>> v = u + np.random.default_rng(0).standard_normal(200)  # one logit, shifted by the group
        >>> round(knn_mutual_information(v, u), 4)  # nats; at most H(u) = log 2
        0.1855
    """
    if estimator not in KNN_MI_ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {list(KNN_MI_ESTIMATORS)}")
    v = np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    u = np.asarray(u.detach().cpu() if isinstance(u, torch.Tensor) else u).reshape(-1)
    v = v.reshape(len(v), -1) if v.ndim != 1 else v.reshape(-1, 1)
    if len(v) != len(u):
        raise ValueError(f"v has {len(v)} samples but u has {len(u)}")
    keep = u >= 0
    v, u = v[keep], u[keep].astype(np.int64)
    _, counts = np.unique(u, return_counts=True)
    if len(u) < max(min_samples, n_neighbors + 1) or np.sum(counts >= 2) < 2 or not np.isfinite(v).all():
        return float("nan")
    if estimator == "sum":
        from sklearn.feature_selection import mutual_info_classif

        return float(mutual_info_classif(v, u, n_neighbors=n_neighbors, random_state=random_state).sum())
    return _joint_mi(v, u, n_neighbors, random_state)


def _joint_mi(v: np.ndarray, u: np.ndarray, n_neighbors: int, random_state: int) -> float:
    """Ross (2014) on the whole vector; mirrors sklearn's ``_compute_mi_cd`` with the max-norm."""
    from scipy.special import digamma
    from sklearn.neighbors import KDTree, NearestNeighbors
    from sklearn.preprocessing import scale
    from sklearn.utils import check_random_state

    rng = check_random_state(random_state)
    x = scale(v, with_mean=False, copy=True)
    means = np.maximum(1, np.mean(np.abs(x), axis=0))
    x += 1e-10 * means * rng.standard_normal(size=x.shape)
    n = len(u)
    radius = np.empty(n)
    label_counts = np.empty(n)
    k_all = np.empty(n)
    for label in np.unique(u):
        mask = u == label
        count = int(mask.sum())
        if count > 1:
            k = min(n_neighbors, count - 1)
            nn = NearestNeighbors(n_neighbors=k, metric="chebyshev").fit(x[mask])
            r = nn.kneighbors()[0]
            radius[mask] = np.nextafter(r[:, -1], 0)
            k_all[mask] = k
        label_counts[mask] = count
    mask = label_counts > 1
    x, radius, k_all, label_counts = x[mask], radius[mask], k_all[mask], label_counts[mask]
    m_all = KDTree(x, metric="chebyshev").query_radius(x, radius, count_only=True, return_distance=False)
    mi = digamma(len(x)) + np.mean(digamma(k_all)) - np.mean(digamma(label_counts)) - np.mean(digamma(m_all))
    return float(max(0.0, mi))
