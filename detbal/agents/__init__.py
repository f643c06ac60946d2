"""LLM-driven agents of arXiv:2512.10047 that record every attempt in a run store.

Heavy clients (openai, llama_cpp) are imported only by the backends that use them.
"""
