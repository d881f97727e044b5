"""Explanations: where a model looked (`methods.py`, through Captum) and whether a method's maps
pass the sanity checks (`sanity.py`: deletion against random deletion, and weight randomisation)."""
