"""Performance figures for cortexlens, each a ratio measured within one run (``make bench``)."""
