"""Analysis: classification metrics, training health, bias/variance, and the figures."""
