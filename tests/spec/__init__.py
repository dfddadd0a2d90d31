"""Tests of the workflow language (`workflowd.spec`)."""
