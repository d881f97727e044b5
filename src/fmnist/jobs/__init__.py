"""Whole jobs built from the parts, one file each: train or resume a run, evaluate it, run the
study, predict image files, export a run, benchmark. The CLI, the sweeps and the tests call these."""
