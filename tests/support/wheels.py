"""Build tiny, real wheels inside the tests (no network, no build backend)."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(
    directory: Path,
    name: str,
    version: str = "1.0",
    *,
    requires: tuple[str, ...] = (),
    module_source: str | None = None,
    padding: int = 0,
) -> Path:
    """A pure-Python wheel providing module ``name`` (dashes → underscores).

    ``padding`` adds that many bytes of incompressible data, to make downloads take time.
    """
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{module}/__init__.py": (
            module_source or f'NAME = "{name}"\nVERSION = "{version}"\n'
        ).encode(),
        f"{dist}/METADATA": (
            "Metadata-Version: 2.1\n"
            f"Name: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {req}\n" for req in requires)
        ).encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if padding:
        import os

        files[f"{module}/_padding.bin"] = os.urandom(padding)
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist}/RECORD,,\n"
    files[f"{dist}/RECORD"] = record.encode()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return target


_IN_TREE_BACKEND = '''"""A PEP 517/660 build backend in the project's own tree: builds offline, needs nothing."""
import base64, hashlib, os, zipfile

NAME, VERSION = {name!r}, {version!r}
MODULE = NAME.replace("-", "_")


def _wheel(directory, files):
    dist = f"{{MODULE}}-{{VERSION}}.dist-info"
    files = dict(files)
    files[f"{{dist}}/METADATA"] = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode()
    files[f"{{dist}}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tests\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{{path}},sha256={{digest}},{{len(data)}}\\n"
    files[f"{{dist}}/RECORD"] = (record + f"{{dist}}/RECORD,,\\n").encode()
    name = f"{{MODULE}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, MODULE, "__init__.py"), "rb") as source:
        return _wheel(wheel_directory, {{f"{{MODULE}}/__init__.py": source.read()}})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.abspath(__file__))
    return _wheel(wheel_directory, {{f"_{{MODULE}}_editable.pth": (here + "\\n").encode()}})


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []
'''


def write_local_project(directory: Path, name: str, version: str = "0.1") -> Path:
    """A source tree of project ``name`` (module with ``NAME``) whose build backend lives in
    the tree itself, so uv and pip build it, editable or not, without any index."""
    module = name.replace("-", "_")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / module).mkdir(exist_ok=True)
    (directory / module / "__init__.py").write_text(f'NAME = "{name}"\n')
    (directory / "in_tree_backend.py").write_text(
        _IN_TREE_BACKEND.format(name=name, version=version)
    )
    (directory / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
        '[build-system]\nrequires = []\nbuild-backend = "in_tree_backend"\nbackend-path = ["."]\n'
    )
    return directory
