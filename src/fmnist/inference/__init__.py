"""Answering with a trained model: one loader for a run folder or an .onnx file (a Predictor),
ONNX Runtime set up for this machine, and a model's export to ONNX with its checks."""
