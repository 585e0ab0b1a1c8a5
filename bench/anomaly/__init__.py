"""The labelled anomaly benchmark: synthetic boot series (series.py), run through
promtool's own rule evaluation (promtool_run.py), scored against the labels (score.py)."""
