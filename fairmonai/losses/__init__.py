"""fairmonai.losses."""
