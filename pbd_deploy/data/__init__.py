"""Datasets for training: torch windows, features, sampling, synthetic data (files: `core`)."""
