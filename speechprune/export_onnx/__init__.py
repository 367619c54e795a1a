"""``speechprune export-onnx``: a stock or shrunk model to one checked ONNX file (``job.export_model``)."""
