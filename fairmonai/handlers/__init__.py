"""ignite handlers and metrics of fairmonai, attached to MONAI engines through bundle configs."""

from .fairness_metric import GroupFairnessMetric
from .gradient_clipping import GradientClipping, should_step
from .penalty_curve import PenaltyCurveLogger
from .predictions_writer import PredictionsWriter
from .training_checkpoint import TrainingCheckpoint

__all__ = ["GroupFairnessMetric", "GradientClipping", "PenaltyCurveLogger", "PredictionsWriter", "TrainingCheckpoint", "should_step"]
