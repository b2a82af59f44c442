"""Embedding maps: sentence embeddings (cached by text), 2-D projections, clusters with keywords,
nearest neighbours, colour sources and the figures. The steps one by one are the verbs of the same
name in their modules: core.maps.embed.embed, core.maps.project.project, core.maps.cluster.cluster,
core.maps.neighbours.neighbours (the package exports no name that is also a submodule's).
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "get_embedder": "embed",
    "load_vectors": "embed",
    "embedding_runs": "embed",
    "EmbedReport": "embed",
    "make_map": "points",
    "list_maps": "points",
    "get_map": "points",
    "load_points": "points",
    "MapInfo": "points",
    "search": "neighbours",
    "embedding_plan": "estimates",
})
