"""llama.cpp's GGUF files: the header (reader.py), what its metadata says about the model
(metadata.py) and its tokenizer (tokenizer.py), the tensor types (blocks.py), and the
Checkpoint over all of them (loader.py). Importing this package imports no gguf code."""
