"""Commands outside the DVC pipeline: gradcheck, lr-find, ensemble, search, study, fingerprint."""
