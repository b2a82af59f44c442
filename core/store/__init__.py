"""The store: one DuckDB file of datasets, samples, runs and everything computed about them;
its schema migrations; background jobs.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Store": "database",
    "StoreError": "database",
    "StoreBusy": "database",
    "StoreVersionError": "database",
    "DatasetInfo": "database",
    "default_db_path": "database",
    "migrate": "database",
    "Run": "runs",
    "Job": "jobs",
    "JobCancelled": "jobs",
    "start_job": "jobs",
    "get_job": "jobs",
    "cancel_job": "jobs",
})
