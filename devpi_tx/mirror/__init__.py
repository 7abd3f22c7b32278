"""The upstream client, simple-page parsing, mirror pages and file downloads."""
