"""Every public name of fairmonai.metrics / handlers resolves to the object of its module."""

import inspect

import fairmonai.handlers as handlers
import fairmonai.metrics as metrics


def test_metrics_all_resolves():
    assert len(metrics.__all__) == len(set(metrics.__all__))
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if callable(obj) and hasattr(obj, "__module__"):
            assert obj.__module__.startswith("fairmonai.metrics._"), name


def test_handlers_all_resolves():
    """Every public handler name resolves to an object of a fairmonai.handlers module, and every class
    among them is a handler: MONAI's bundle config attaches it with ``attach(engine)``."""
    assert len(handlers.__all__) == len(set(handlers.__all__))
    n_classes = 0
    for name in handlers.__all__:
        obj = getattr(handlers, name)
        assert obj.__module__.startswith("fairmonai.handlers."), name
        if isinstance(obj, type):
            assert list(inspect.signature(obj.attach).parameters)[:2] == ["self", "engine"], name
            n_classes += 1
    assert n_classes >= 1
