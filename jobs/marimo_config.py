"""marimo's configuration file (``marimo.toml`` in the state folder, marimo's
``XDG_CONFIG_HOME``): which package manager it names, and making it name ours.

Invariants: every other setting the user made is kept; a file that cannot be parsed (or a
``package_management`` that is no table) is kept aside as ``marimo.toml.broken``, never lost;
the file is rewritten atomically (:func:`jobs.atomic.write_atomically`), and only when the
manager it names is not ours; reading needs the standard library alone (``tomlkit`` is imported
only to write).
"""

from __future__ import annotations

from jobs.installers import Installer
from jobs.layout import StateLayout


def configured_manager(layout: StateLayout) -> str | None:
    """The package manager marimo's config names (``None`` when unset or unreadable)."""
    import tomllib

    try:
        with layout.marimo_config.open("rb") as handle:
            table = tomllib.load(handle).get("package_management")
    except (OSError, ValueError):  # TOMLDecodeError, and UnicodeDecodeError for non-UTF-8 bytes
        return None
    manager = table.get("manager") if isinstance(table, dict) else None
    return manager if isinstance(manager, str) else None


def configure_package_manager(layout: StateLayout, installer: Installer) -> None:
    """Make marimo's Install button use our installer; keep every other user setting.

    A config file that cannot be parsed is kept aside as ``marimo.toml.broken`` (never lost).
    """
    if configured_manager(layout) == installer.name:
        return  # read with the standard library: tomlkit is only needed to write
    import tomlkit

    path = layout.marimo_config
    path.parent.mkdir(parents=True, exist_ok=True)
    document: tomlkit.TOMLDocument
    try:
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        document = tomlkit.document()
    except (OSError, ValueError, tomlkit.exceptions.TOMLKitError):
        path.replace(path.with_name(path.name + ".broken"))
        document = tomlkit.document()
    table = document.get("package_management")
    if not isinstance(table, dict):  # missing, or a string/number/array where a table belongs
        if table is not None:
            path.parent.joinpath(path.name + ".broken").write_text(
                tomlkit.dumps(document), encoding="utf-8"
            )
            del document["package_management"]
        table = tomlkit.table()
        document["package_management"] = table
    if table.get("manager") == installer.name:
        return
    table["manager"] = installer.name
    from jobs.atomic import write_atomically

    write_atomically(path, tomlkit.dumps(document))
