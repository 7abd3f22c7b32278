# -*- test-case-name: tests.e2e.test_e2e_server -*-
"""
Console scripts in the style of devpi-server's C{devpi-export},
C{devpi-import} and C{devpi-fsck}: the same one-shot actions as
C{twistd devpi --export/--import/--fsck}, without starting twistd.
"""

from __future__ import annotations

import argparse
import os
import sys

from devpi_tx.store.interfaces import StorageError

DEFAULT_SERVERDIR = "~/.devpi/server"


def _serverdir(value: str | None) -> str:
    chosen = value or os.environ.get("DEVPISERVER_SERVERDIR") or os.environ.get("DEVPI_SERVERDIR") or DEFAULT_SERVERDIR
    return os.path.abspath(os.path.expanduser(chosen))


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--serverdir", help=f"server directory [{DEFAULT_SERVERDIR}]")
    return parser


def _report(stats: object) -> None:
    for warning in getattr(stats, "warnings", []):
        print(f"warning: {warning}")
    for skipped in getattr(stats, "skipped", []):
        print(f"skipped: {skipped}")


def _fatal(error: Exception) -> int:
    sys.stderr.write(f"fatal: {error}\n")
    return 1


def run_export(serverdir: str, directory: str, hard_links: bool, include_mirrored_files: bool) -> int:
    """Export C{serverdir} into C{directory}; the exit status."""
    from devpi_tx.admin.dumpformat import DumpError, progress_printer
    from devpi_tx.admin.export import export_dump

    try:
        stats = export_dump(
            serverdir,
            directory,
            hard_links=hard_links,
            include_mirrored_files=include_mirrored_files,
            progress=progress_printer(),
        )
    except (DumpError, StorageError) as e:
        return _fatal(e)
    _report(stats)
    print(f"exported {serverdir} to {directory}")
    return 0


def run_import(
    serverdir: str,
    directory: str,
    hard_links: bool,
    skip_import_types: list[str],
    root_pypi: bool,
    root_passwd: str | None,
    root_passwd_hash: str | None,
) -> int:
    """Create C{serverdir} from the dump in C{directory}; the exit status."""
    from devpi_tx.admin.dumpformat import DumpError, progress_printer
    from devpi_tx.admin.importer import import_dump

    try:
        stats = import_dump(
            serverdir,
            directory,
            hard_links=hard_links,
            skip_import_types=skip_import_types,
            root_pypi=root_pypi,
            root_passwd=root_passwd,
            root_passwd_hash=root_passwd_hash,
            progress=progress_printer(),
        )
    except (DumpError, StorageError) as e:
        return _fatal(e)
    _report(stats)
    print(f"imported {directory} into {serverdir}")
    return 0


def run_fsck(serverdir: str, checksum: bool, refetch_mirror: bool) -> int:
    """Check the stored files of C{serverdir}; the exit status."""
    from devpi_tx.admin.fsck import fsck

    try:
        report = fsck(serverdir, checksum=checksum, refetch_mirror=refetch_mirror)
    except StorageError as e:
        return _fatal(e)
    print(report.text(), end="")
    return int(report.status)


def export_main(argv: list[str] | None = None) -> int:
    parser = _parser("devpi-tx-export", "Export the server state in devpi's dump format.")
    parser.add_argument("--hard-links", action="store_true", help="link files instead of copying them")
    parser.add_argument("--include-mirrored-files", action="store_true", help="export cached mirror files too")
    parser.add_argument("directory", help="new or empty directory for the dump")
    args = parser.parse_args(argv)
    return run_export(_serverdir(args.serverdir), args.directory, args.hard_links, args.include_mirrored_files)


def import_main(argv: list[str] | None = None) -> int:
    parser = _parser("devpi-tx-import", "Create a new server directory from a devpi dump.")
    parser.add_argument("--hard-links", action="store_true", help="link files instead of copying them")
    parser.add_argument(
        "--skip-import-type", action="append", default=[], metavar="TYPE", help="index type to leave out"
    )
    parser.add_argument("--no-root-pypi", action="store_true", help="do not create root/pypi")
    parser.add_argument("--root-passwd", help="root password (instead of the dump's)")
    parser.add_argument("--root-passwd-hash", help="root password hash (instead of the dump's)")
    parser.add_argument("directory", help="the dump")
    args = parser.parse_args(argv)
    return run_import(
        _serverdir(args.serverdir),
        args.directory,
        args.hard_links,
        args.skip_import_type,
        not args.no_root_pypi,
        args.root_passwd,
        args.root_passwd_hash,
    )


def fsck_main(argv: list[str] | None = None) -> int:
    parser = _parser("devpi-tx-fsck", "Check every stored file against its hash and size.")
    parser.add_argument("--no-checksum", action="store_true", help="check existence and size only")
    parser.add_argument(
        "--refetch-mirror", action="store_true", help="forget damaged mirror files so they download again"
    )
    args = parser.parse_args(argv)
    return run_fsck(_serverdir(args.serverdir), not args.no_checksum, args.refetch_mirror)
