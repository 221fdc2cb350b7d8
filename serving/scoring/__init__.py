"""`digits score`: the batch scorer, its input readers, its row writers and its two engines."""
