"""interplay: study how the hyperparameters and architecture of image classifiers interact."""

__version__ = "0.1.0"
