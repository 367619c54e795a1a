"""Running a model outside eager float32 torch: the ONNX export checked against torch (``onnx``),
ONNX Runtime sessions (``sessions``), which graph bench and eval run and how (``runtime``), and
int8 quantization in torch and in ONNX Runtime (``quantize``). Used by shrink (``--onnx``),
bench (``--runtime``, ``--quantize``), eval (``--runtime``, ``--quantize``) and export-onnx."""
