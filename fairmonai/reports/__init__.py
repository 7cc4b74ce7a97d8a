"""fairmonai.reports."""
