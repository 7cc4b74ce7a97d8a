"""fairmonai.metrics."""
