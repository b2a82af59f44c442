"""Taggers: the backends that make Magpie-style tags (core/tags.py) and the job that runs them.

offline.py (language, turns, lengths), zeroshot.py (task category by embedding similarity), learned.py
(classifiers on embeddings from labels), reward_proxy.py (Bradley-Terry head from preference pairs),
llm_judge.py (OpenAI-compatible endpoint or local transformers generation), reward_models.py
(sequence-classification reward models and ensembles); job.py runs them as a recorded, resumable run.
"""
