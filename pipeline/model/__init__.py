"""The model: the MLP and its checkpoints, and the fixed preprocessing transform."""
