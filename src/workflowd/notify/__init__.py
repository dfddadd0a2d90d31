"""Webhooks to the operator's destinations: their configuration (the `[webhooks]` section of
the settings file) and the HTTP sender (aiohttp's client, like `jobs/`). The engine's
deliverer (`engine/notify.py`) decides what to send when; this package only reads settings and
speaks HTTP."""
