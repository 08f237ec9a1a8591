"""Example plugins for pse-kd-bench (see README.md)."""
