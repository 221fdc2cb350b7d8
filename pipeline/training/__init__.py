"""Training: the train params, the epoch loop, optimizers and schedules, augmentations."""
