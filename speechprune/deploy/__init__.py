"""Running a model outside eager float32 torch: ONNX export checked against torch, ONNX Runtime
sessions and the ``export-onnx`` job (``onnx``), and int8 quantization (``quantize``). Used by
shrink (``--onnx``), bench (``--runtime``, ``--quantize``) and eval (``--quantize``)."""
