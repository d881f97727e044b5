"""Measuring fmnist rather than running it: the load-test client of a server (`load.py`) and the
saliency methods' sanity checks on a run (`sanity.py`), for the benchmarks and the tests. Nothing
the commands or the server need imports from here."""
