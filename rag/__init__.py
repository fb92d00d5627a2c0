"""Retrieval-augmented answering: ingestion, the embedded FTS5 index, the RAG HTTP service and its
client, and grounded generation. Clients are passed in, never module globals."""
