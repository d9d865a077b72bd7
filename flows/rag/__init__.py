"""The RAG lifecycle: sources, planning, parsing, embedding, the vector store and their flows."""
