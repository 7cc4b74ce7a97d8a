"""Every public name of fairmonai.metrics / handlers resolves to the object of its private module."""

import fairmonai.handlers as handlers
import fairmonai.metrics as metrics


def test_metrics_all_resolves():
    assert len(metrics.__all__) == len(set(metrics.__all__))
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if callable(obj) and hasattr(obj, "__module__"):
            assert obj.__module__.startswith("fairmonai.metrics._"), name


def test_handlers_all_resolves():
    assert handlers.GroupFairnessMetric.__module__ == "fairmonai.handlers.fairness_metric"
