"""Performance figures for cortexlens, each a ratio measured within one run (``make bench``)."""

# The bare forward pass runs with the server's OpenMP settings, which importing the package sets before torch loads.
import app  # noqa: F401
