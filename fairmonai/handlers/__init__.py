"""fairmonai.handlers."""
