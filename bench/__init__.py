"""pse-kd-bench: contrastive KD of speaker embeddings for on-the-fly refinement in personalized SE."""

__version__ = "0.1.0"
