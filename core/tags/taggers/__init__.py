"""Taggers: the backends that make Magpie-style tags (core/tags/results.py) and the job that runs them.

offline.py (language, turns, lengths), zeroshot.py (task category: a head on embeddings fitted on the
definitions and examples of category_examples.py), learned.py (classifiers on embeddings from labels),
reward_proxy.py (Bradley-Terry preference proxy, tag preference_proxy), llm_judge.py (OpenAI-compatible
endpoint or local transformers generation), reward_models.py (response_quality from sequence-classification
reward models and calibrated ensembles), llama_guard.py (safety from a Llama Guard model); job.py runs them
as a recorded, resumable run.
"""
