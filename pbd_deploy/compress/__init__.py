"""Model compression: the block-handle API (Progressive Block Drop builds on it)."""
