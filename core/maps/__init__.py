"""Embedding maps: sentence embeddings (cached by text), 2-D projections, clusters with keywords,
nearest neighbours, colour sources and the figures.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "embed": "embed",
    "get_embedder": "embed",
    "load_vectors": "embed",
    "embedding_runs": "embed",
    "EmbedReport": "embed",
    "make_map": "points",
    "list_maps": "points",
    "get_map": "points",
    "load_points": "points",
    "MapInfo": "points",
    "project": "project",
    "cluster": "cluster",
    "neighbours": "neighbours",
    "search": "neighbours",
    "embedding_plan": "estimates",
})
