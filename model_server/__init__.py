"""llama.cpp model server: the seed's POST /predict plus an OpenAI-compatible API,
continuous batching."""
