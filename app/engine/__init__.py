"""The analysis engine: model cards, loading, capture, statistics and rendering. No web framework inside."""
