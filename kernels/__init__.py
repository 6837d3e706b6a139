"""CUDA C++ kernel sources shipped with xsim (single source for GPU and CPU)."""
