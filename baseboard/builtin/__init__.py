"""The built-in plugin: the torch references of every op, the Llama-family models and the
quantization methods baseboard ships."""
