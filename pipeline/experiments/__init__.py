"""Experiments: named DVC runs, search spaces, comparison studies, and how trials are ranked."""
