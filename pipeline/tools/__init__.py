"""Commands outside the DVC pipeline: gradcheck, lr-find, ensemble, search and study."""
