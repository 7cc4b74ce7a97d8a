"""ignite handlers and metrics of fairmonai, attached to MONAI engines through bundle configs."""

from .batchnorm_recalibration import BatchNormRecalibration, recalibrate_batchnorm
from .best_weights import BestWeights
from .case_collector import CaseCollector
from .empty_cells import EmptyCellShare
from .epoch_seed import EpochSeed
from .fairbatch import FairBatchUpdate
from .fairvit_calibration import FairViTCalibration
from .final_checkpoint import FinalCheckpointSaver
from .fairness_metric import GroupFairnessMetric
from .gradient_clipping import GradientClipping, should_step
from .penalty_curve import PenaltyCurveLogger
from .predictions_writer import PredictionsWriter
from .segmentation_writer import SegmentationScoresWriter
from .reconstruction import LossTermsLogger, ReconstructionMetric, ReconstructionWriter, image_target_batch, per_image_values
from .subgroup_reweighting import SubgroupReweighting
from .training_checkpoint import TrainingCheckpoint

__all__ = [
    "BatchNormRecalibration",
    "BestWeights",
    "CaseCollector",
    "EmptyCellShare",
    "EpochSeed",
    "FairBatchUpdate",
    "FairViTCalibration",
    "FinalCheckpointSaver",
    "GroupFairnessMetric",
    "GradientClipping",
    "PenaltyCurveLogger",
    "PredictionsWriter",
    "SegmentationScoresWriter",
    "SubgroupReweighting",
    "LossTermsLogger",
    "ReconstructionMetric",
    "ReconstructionWriter",
    "image_target_batch",
    "per_image_values",
    "TrainingCheckpoint",
    "recalibrate_batchnorm",
    "should_step",
]
