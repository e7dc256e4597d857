"""Model registry, hardware detection, model selection and the llama.cpp adapter."""
