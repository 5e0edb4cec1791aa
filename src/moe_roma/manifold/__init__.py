"""Task embeddings, the neighbour graph over the successful set, kernels and alignment metrics."""
