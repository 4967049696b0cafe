"""Datasets on disk: annotations, video decoding, features, window sampling, synthetic data."""
