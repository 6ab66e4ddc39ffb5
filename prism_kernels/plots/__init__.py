"""Figures from results (never runs a pipeline). matplotlib is imported inside the functions."""
