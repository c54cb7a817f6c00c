"""cortexlens: what a convolutional network sees, layer by layer, beside the primate ventral stream."""

import os

# Set before torch loads its OpenMP runtime. By default OpenMP threads busy-wait between parallel regions, and every
# thread that calls torch (each inference worker, the loader) keeps a team of its own: idle teams spinning on the
# same cores made forward passes up to twice as slow. Waiting passively, two inference workers under four
# concurrent clients reached 1.3× the bare forward throughput instead of 0.5–0.7×. An operator's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
