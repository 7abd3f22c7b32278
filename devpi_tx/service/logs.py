# -*- test-case-name: tests.service.test_options -*-
"""
Log observers for twistd's C{--logger} option, e.g. JSON lines on stdout:
C{twistd --logger devpi_tx.service.logs.json_lines -n devpi ...}.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_lines() -> ILogObserver:
    """Every event as one JSON object per line on stdout (record separators off)."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
