"""Compression of an MLP: pruning, structured shrinking, folding, and size accounting."""
