"""Training: the typed config and its recipes, the optimizer and schedule, the loop over the
whole-tensor dataset, the state a checkpoint holds, and the processes that train together."""
