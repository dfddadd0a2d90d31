"""workflowd: a workflow orchestration daemon for data pipelines."""

__version__ = "0.1.0"
