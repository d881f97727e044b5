"""The run folder: one owner of every file a run holds (see folder.py)."""
