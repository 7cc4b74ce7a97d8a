"""Fairness metrics: group rates and disparities, AUC by group, FaMI-paper indices, MAMA-MIA
challenge scores, subgroup divergence.

The code lives in private modules; this package re-exports the public names, in three groups:
classification (``_group_rates``, ``_auc``, ``_fami_metrics``, ``_classification``), segmentation
(``_segmentation``, ``_bootstrap_segmentation``), subgroups (``_subgroups``) and information
(``_mutual_information``). Group arguments are keyword-only
(``sensitive_features=``); group code ``-1`` marks a value excluded by the missing-value policy
(counted overall, in no group).
"""

from ._auc import equity_scaled_auc, mann_whitney_auc, roc_auc_by_group
from ._bootstrap_segmentation import bootstrap_challenge_scores
from ._cross_entropy import WeightedCrossEntropyMetric, weighted_cross_entropy
from ._classification import ClassificationFairnessMetric, FairnessSummary, classification_fairness_summary
from ._fami_metrics import EODD_STRATEGIES, compute_eodd, compute_eom, compute_sigma_iou
from ._group_inputs import UndefinedGroupMetricWarning
from ._group_rates import (
    GroupConfusionCounts,
    confusion_counts_by_group,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate_by_group,
    group_rates,
    selection_rate_by_group,
    true_positive_rate_by_group,
)
from ._group_results import DisparityResult, GroupMetricResult
from ._mutual_information import KNN_MI_ESTIMATORS, knn_mutual_information
from ._segmentation import (
    HD_MAX,
    HD_METHODS,
    ChallengeScoreMetric,
    ChallengeScores,
    VariableDisparity,
    case_scores,
    challenge_scores,
)
from ._subgroups import (
    DIVERGENCE_COLUMNS,
    MINING_ALGORITHMS,
    divergence_weights,
    max_abs_divergence_per_sample,
    subgroup_divergence,
    subgroup_membership,
)

_CLASSIFICATION = [
    "GroupConfusionCounts",
    "GroupMetricResult",
    "DisparityResult",
    "FairnessSummary",
    "UndefinedGroupMetricWarning",
    "EODD_STRATEGIES",
    "confusion_counts_by_group",
    "group_rates",
    "true_positive_rate_by_group",
    "false_positive_rate_by_group",
    "selection_rate_by_group",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "mann_whitney_auc",
    "roc_auc_by_group",
    "equity_scaled_auc",
    "compute_eom",
    "compute_eodd",
    "compute_sigma_iou",
    "classification_fairness_summary",
    "ClassificationFairnessMetric",
    "WeightedCrossEntropyMetric",
    "weighted_cross_entropy",
]
_SEGMENTATION = [
    "HD_MAX",
    "HD_METHODS",
    "VariableDisparity",
    "ChallengeScores",
    "case_scores",
    "challenge_scores",
    "bootstrap_challenge_scores",
    "ChallengeScoreMetric",
]
_SUBGROUPS = [
    "DIVERGENCE_COLUMNS",
    "MINING_ALGORITHMS",
    "subgroup_divergence",
    "subgroup_membership",
    "max_abs_divergence_per_sample",
    "divergence_weights",
]
# the k-NN estimate of I(attribute; outputs) that PenaltyCurveLogger logs (FaMI's Figure 3)
_INFORMATION = ["KNN_MI_ESTIMATORS", "knn_mutual_information"]
__all__ = _CLASSIFICATION + _SEGMENTATION + _SUBGROUPS + _INFORMATION


