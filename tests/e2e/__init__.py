"""Tests of end to end: real processes, real clients, 127.0.0.1."""
