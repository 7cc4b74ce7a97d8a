"""ignite handlers and metrics of fairmonai, attached to MONAI engines through bundle configs."""

from .fairness_metric import GroupFairnessMetric

__all__ = ["GroupFairnessMetric"]
