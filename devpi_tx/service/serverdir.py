# -*- test-case-name: tests.e2e.test_e2e_server,tests.store.test_tempfiles -*-
"""
The server directory: node info, database and file store, and its
initialisation with serial 0 (root user and the C{root/pypi} mirror).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

from devpi_tx.domain import keys
from devpi_tx.domain.auth import hash_password
from devpi_tx.domain.users import now_iso
from devpi_tx.model.ixconfig import root_pypi_config
from devpi_tx.store.factory import create_database, upgrade_database
from devpi_tx.store.files import remove_stale_temp_files
from devpi_tx.store.interfaces import ITransaction

NODEINFO = ".nodeinfo"
DATABASE = "devpi_tx.sqlite"
FILES = "+files"


@dataclass(frozen=True)
class ServerDir:
    path: str

    @property
    def database(self) -> str:
        return os.path.join(self.path, DATABASE)

    @property
    def files(self) -> str:
        return os.path.join(self.path, FILES)

    @property
    def nodeinfo_path(self) -> str:
        return os.path.join(self.path, NODEINFO)

    def foreign(self) -> str | None:
        """
        A reason this directory must not be used: it holds devpi-server's
        own database, which devpi_tx reads only through export and import.
        """
        if not os.path.exists(self.database) and any(
            os.path.exists(os.path.join(self.path, name)) for name in (".serverversion", ".sqlite")
        ):
            return (
                f"{self.path} is a devpi-server directory: export it with "
                "'devpi-export DUMPDIR' and import the dump with "
                "'twistd devpi --serverdir NEWDIR --import DUMPDIR'"
            )
        return None

    def is_initialised(self) -> bool:
        return os.path.exists(self.nodeinfo_path) and os.path.exists(self.database)

    def nodeinfo(self) -> dict[str, str]:
        with open(self.nodeinfo_path) as f:
            info: dict[str, str] = json.load(f)
        return info

    def initialise(
        self,
        root_password: str = "",
        root_pwhash: str | None = None,
        root_pypi: bool = True,
    ) -> None:
        """Create the directory, the database at serial 0 and the node info."""
        os.makedirs(self.files, exist_ok=True)

        def initial(tx: ITransaction) -> None:
            stamp = now_iso()
            pwhash = root_pwhash or hash_password(root_password)
            tx.set(keys.user("root"), {"pwhash": pwhash, "created": stamp, "modified": stamp})
            if root_pypi:
                tx.set(keys.index("root/pypi"), root_pypi_config())

        create_database(self.database, initial)
        if not os.path.exists(self.nodeinfo_path):
            fd = os.open(self.nodeinfo_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"role": "standalone", "uuid": uuid.uuid4().hex}, f)

    def open(self) -> None:
        """
        Bring the schema up to date before the store opens the database, and
        drop temporary files a crash left (their metadata never committed).
        """
        upgrade_database(self.database)
        remove_stale_temp_files(self.files)
        locks = os.path.join(self.files, ".locks")
        if os.path.isdir(locks):  # download locks: no process of the tree runs yet
            for name in os.listdir(locks):
                os.unlink(os.path.join(locks, name))
