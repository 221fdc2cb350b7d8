"""ONNX export: the graph, the plain session that checks it, ensembles and the model card."""
