"""Datasets: the built-in procedural benchmark and readers for the real ones."""
