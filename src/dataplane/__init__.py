"""The local data plane: a jobs HTTP API that runs NQL on per-company DuckDB databases.

It is also the reference implementation of the jobs API contract workflowd speaks
(`docs/jobs-api.md`). It never imports `workflowd`.
"""
