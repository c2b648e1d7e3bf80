"""Numba CPU kernels, one module per op.  They assume validated input."""
