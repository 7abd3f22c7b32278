"""Tests of web/ (the HTTP API in memory)."""
