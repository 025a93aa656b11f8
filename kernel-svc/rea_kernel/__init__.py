"""KernelEvolve: search-based kernels for the operators ranking models spend their time in."""
