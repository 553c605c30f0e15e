"""FLEX-Seg."""
