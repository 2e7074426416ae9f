"""Planning: a study file becomes a validated spec, then a DAG of stage descriptions (no stage runs here)."""
