"""fairmonai.networks."""
