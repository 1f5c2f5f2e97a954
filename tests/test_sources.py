"""jobs/sources.py and its helpers: what should be installed, from every declared source."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jobs.declared_install import header_additions, notes
from jobs.errors import PermanentError
from jobs.install_input import write_install_input
from jobs.install_summary import LISTED, changes, summary
from jobs.installers import find_uv
from jobs.script_headers import HeaderCache
from jobs.source_conflicts import conflicts, yielded
from jobs.sources import Declared, collect
from tests.support.index import LocalIndex
from tests.support.wheels import build_wheel

PYTHON = "3.11.7"

HEADER = """# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "marimo",
#     "pandas==2.2.3",
#     "colorama ; sys_platform == 'win32'",
# ]
# ///
"""

BODY = """
import marimo

app = marimo.App()


@app.cell
def _():
    import pandas
    return
"""


def notebook(folder: Path, name: str, header: str = HEADER, body: str = BODY) -> Path:
    path = folder / name
    path.write_text(header + body, encoding="utf-8")
    return path


def declared(
    folder: Path,
    env: dict[str, str] | None = None,
    cache: HeaderCache | None = None,
    excluded: tuple[Path, ...] = (),
) -> Declared:
    return collect(folder, None, env or {}, PYTHON, cache=cache, excluded=excluded)


def bump(path: Path) -> None:
    """Make sure a rewrite is seen even within one mtime tick."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000))


def test_includes_constraints_and_uv_config_change_the_digest(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r extra/more.txt\n--constraint=pins.txt\nattrs\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "more.txt").write_text("-r ../requirements.txt\nidna\n")  # a cycle
    (tmp_path / "pins.txt").write_text("idna==3.7\n")
    config = tmp_path / "uv.toml"
    env = {"UV_CONFIG_FILE": str(config)}
    first = declared(tmp_path, env=env)
    assert set(first.files) >= {
        tmp_path / "requirements.txt",
        tmp_path / "extra" / "more.txt",
        tmp_path / "pins.txt",
        config,
    }
    assert [
        (line.origin.name, str(line.requirement), line.kind) for line in first.requirement_lines
    ] == [
        ("requirements.txt", "attrs", "requirement"),
        ("more.txt", "idna", "requirement"),
        ("pins.txt", "idna==3.7", "constraint"),
    ]
    assert first.problems == ()
    digests = [first.digest]
    for path, text in (
        (tmp_path / "extra" / "more.txt", "-r ../requirements.txt\nidna>=3\n"),
        (tmp_path / "pins.txt", "idna==3.8\n"),
        (config, "no-index = true\n"),  # a missing file and an existing one differ
        (config, "no-index = false\n"),
    ):
        path.write_text(text)
        digests.append(declared(tmp_path, env=env).digest)
    assert len(set(digests)) == len(digests)
    assert declared(tmp_path, env=env).digest == digests[-1]  # stable


def test_a_missing_include_is_reported_and_counted(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r gone.txt\n")
    before = declared(tmp_path)
    assert before.problems == ("gone.txt is included but does not exist",)
    assert tmp_path / "gone.txt" in before.files
    (tmp_path / "gone.txt").write_text("")
    assert declared(tmp_path).digest != before.digest


def test_a_header_edit_changes_the_digest_a_cell_edit_does_not(tmp_path: Path) -> None:
    path = notebook(tmp_path, "sales.py")
    notebook(tmp_path, "plain.py", header="")
    first = declared(tmp_path)
    (header,) = first.headers
    assert header.path == path
    assert [str(d) for d in header.dependencies] == [
        "marimo",
        "pandas==2.2.3",
        'colorama; sys_platform == "win32"',
    ]
    assert str(header.requires_python) == ">=3.11"
    notebook(tmp_path, "sales.py", body=BODY + "\nx = 1\n")
    assert declared(tmp_path).digest == first.digest
    notebook(tmp_path, "sales.py", header=HEADER.replace("2.2.3", "2.2.2"))
    assert declared(tmp_path).digest != first.digest


def test_a_header_rewritten_without_a_change_of_meaning_keeps_the_digest(tmp_path: Path) -> None:
    """marimo rewrites headers when it saves (order, layout, a bare ``marimo``): no installer
    may run for that."""
    notebook(tmp_path, "sales.py")
    first = declared(tmp_path).digest
    rewritten = (
        "# /// script\n"
        '# dependencies = ["colorama ; sys_platform == \'win32\'", "pandas==2.2.3"]\n'
        '# requires-python = ">=3.11"\n'
        "# ///\n"
    )
    notebook(tmp_path, "sales.py", header=rewritten)
    assert declared(tmp_path).digest == first
    notebook(tmp_path, "sales.py", header=rewritten.replace(">=3.11", ">=3.12"))
    assert declared(tmp_path).digest != first


def test_header_problems_name_the_notebook(tmp_path: Path) -> None:
    notebook(tmp_path, "sales.py", header='# /// script\n# dependencies = ["pandas\n# ///\n')
    notebook(
        tmp_path,
        "newer.py",
        header=(
            "# /// script\n"
            '# requires-python = ">=3.12"\n'
            '# dependencies = ["not a requirement!"]\n'
            "# [tool.uv]\n"
            '# exclude-newer = "2024-01-01T00:00:00Z"\n'
            '# extra-index-url = ["https://example.invalid/simple"]\n'
            "# [tool.marimo.venv]\n"
            '# path = "/opt/other"\n'
            "# ///\n"
        ),
    )
    found = declared(tmp_path)
    text = "\n".join(found.problems)
    assert "sales.py: its `# /// script` header is not valid TOML: " in text
    assert (
        "newer.py: its header's dependency 'not a requirement!' is not a valid requirement" in text
    )
    assert "newer.py: its header asks for Python >=3.12, the environment has Python 3.11.7" in text
    assert "newer.py: its header's [tool.uv] sets `exclude-newer`" in text
    assert "newer.py: its header sets [tool.marimo.venv] to '/opt/other'" in text
    (header,) = found.headers
    assert header.venv == "/opt/other"
    assert dict(header.index_settings) == {"extra-index-url": ["https://example.invalid/simple"]}
    assert found.index_options == ("--extra-index-url https://example.invalid/simple",)


def test_conflicts_name_both_files_and_both_specifiers(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("pandas==2.1.0\nattrs>=23\n")
    notebook(tmp_path, "sales.py")
    notebook(
        tmp_path,
        "other.py",
        header='# /// script\n# dependencies = ["pandas<2", "attrs==22.1", "marimo"]\n# ///\n',
    )
    notebook(
        tmp_path,
        "fine.py",
        header='# /// script\n# dependencies = ["pandas>=2.2", "colorama==1 ; sys_platform == \'win32\'"]\n# ///\n',
    )
    found = conflicts(declared(tmp_path))
    # Ranges written in a header still conflict; the exact pins (sales.py's pandas==2.2.3,
    # other.py's attrs==22.1) give way to requirements.txt instead (the next test).
    assert found == (
        "pandas: requirements.txt asks for pandas==2.1.0, fine.py for pandas>=2.2",
        "pandas: requirements.txt asks for pandas==2.1.0, other.py for pandas<2",
    )


def test_notebooks_pinning_different_versions_conflict(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("pandas>=2\n")  # allows both pins
    notebook(tmp_path, "sales.py")
    notebook(tmp_path, "report.py", header=HEADER.replace("2.2.3", "2.3.0"))
    assert conflicts(declared(tmp_path)) == (
        "pandas: report.py asks for pandas==2.3.0, sales.py for pandas==2.2.3",
    )
    assert yielded(declared(tmp_path)) == ()


def test_a_header_pin_gives_way_to_the_curated_files(tmp_path: Path) -> None:
    """marimo pins every installed package a notebook imports (``name==version``): after a
    change of requirements.txt that pin names the old version, and requirements.txt wins."""
    (tmp_path / "requirements.txt").write_text("pandas==2.3.0\n-c constraints.txt\n")
    (tmp_path / "constraints.txt").write_text("attrs<23\n")
    notebook(tmp_path, "sales.py")
    notebook(tmp_path, "report.py", header=HEADER.replace("2.2.3", "2.3.0"))  # agrees
    notebook(
        tmp_path,
        "attrs.py",
        header="# /// script\n# dependencies = [\"attrs[tests]==23.2 ; python_version >= '3'\"]\n"
        "# ///\n",
    )
    found = declared(tmp_path)
    assert conflicts(found) == ()
    assert [entry.note() for entry in yielded(found)] == [
        "attrs.py pins attrs==23.2; constraints.txt's attrs<23 is used",
        "sales.py pins pandas==2.2.3; requirements.txt's pandas==2.3.0 is used",
    ]
    assert notes(found) == "; ".join(entry.note() for entry in yielded(found))
    work = tmp_path / "work"
    work.mkdir()
    lines = write_install_input(found, work, "uv-not-needed", {}).read_text().splitlines()
    # The pin that gave way is installed by name (extras and markers kept): the curated
    # specifier decides its version; a pin that agrees stays as it is.
    assert lines[1:] == [
        f"-r {tmp_path / 'requirements.txt'}",
        'attrs[tests]; python_version >= "3"  # attrs.py',
        "pandas==2.3.0  # report.py",
        'colorama; sys_platform == "win32"  # report.py',
        "pandas  # sales.py",
    ]


def test_a_header_pin_gives_way_to_pyproject_a_header_range_does_not(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps='"pandas==2.3.0"'))
    notebook(tmp_path, "sales.py")
    assert notes(declared(tmp_path)) == (
        "sales.py pins pandas==2.2.3; pyproject.toml's pandas==2.3.0 is used"
    )
    # A range in a header was written by a person: still a conflict.
    notebook(tmp_path, "range.py", header='# /// script\n# dependencies = ["pandas<2.3"]\n# ///\n')
    assert conflicts(declared(tmp_path)) == (
        "pandas: range.py asks for pandas<2.3, pyproject.toml for pandas==2.3.0",
    )


def test_the_install_input_includes_the_file_and_the_headers(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r more.txt\n")
    (tmp_path / "more.txt").write_text("attrs\n")
    notebook(tmp_path, "sales.py")
    notebook(tmp_path, "again.py")  # the same lines once
    work = tmp_path / "work"
    work.mkdir()
    written = write_install_input(declared(tmp_path), work, "uv-not-needed", {})
    assert written.parent == work
    assert written.read_text().splitlines()[1:] == [
        f"-r {tmp_path / 'requirements.txt'}",
        "pandas==2.2.3  # again.py",
        'colorama; sys_platform == "win32"  # again.py',
    ]


def test_the_header_cache_reads_only_changed_notebooks(tmp_path: Path) -> None:
    for number in range(50):
        notebook(tmp_path, f"nb{number:02}.py")
    for skipped in (".hidden", "__pycache__", "state", "venv"):
        (tmp_path / skipped).mkdir()
        notebook(tmp_path / skipped, "inside.py")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    (tmp_path / "sub").mkdir()
    notebook(tmp_path / "sub", "nested.py")
    cache = HeaderCache()
    first = declared(tmp_path, cache=cache, excluded=(tmp_path / "state",))
    assert len(first.headers) == 51
    assert cache.reads == 51
    again = declared(tmp_path, cache=cache, excluded=(tmp_path / "state",))
    assert cache.reads == 51
    assert again.digest == first.digest
    changed = notebook(tmp_path, "nb07.py", header=HEADER.replace("2.2.3", "2.2.1"))
    bump(changed)
    third = declared(tmp_path, cache=cache, excluded=(tmp_path / "state",))
    assert cache.reads == 52
    assert third.digest != first.digest


# -- a uv project: pyproject.toml + uv.lock, with real uv and a local index -----------------


@pytest.fixture
def uv_bin() -> str:
    found = find_uv()
    assert found is not None
    return found


def uv_env(tmp_path: Path, index: LocalIndex | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    env["UV_CACHE_DIR"] = str(tmp_path / "uv-cache")
    env["UV_PYTHON_DOWNLOADS"] = "never"
    if index is not None:
        env["UV_DEFAULT_INDEX"] = index.url
    return env


PYPROJECT = """[project]
name = "notebooks"
version = "0.1"
requires-python = ">=3.11"
dependencies = [{deps}]
"""


def test_a_uv_project_installs_its_locked_versions(tmp_path: Path, uv_bin: str) -> None:
    wheels, project = tmp_path / "wheels", tmp_path / "project"
    build_wheel(wheels, "orch-locked", "1.0")
    project.mkdir()
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps='"orch-locked"'))
    with LocalIndex(wheels) as index:
        # Lock while only 1.0 exists; then the index offers a newer one.
        subprocess.run(
            [uv_bin, "lock", "--directory", str(project)],
            env=uv_env(tmp_path, index),
            check=True,
            capture_output=True,
        )
        build_wheel(wheels, "orch-locked", "2.0")
        requests_before = len(index.control.requests)
        found = declared(project)
        assert found.lock is not None and dict(found.lock.pins) == {"orch-locked": "1.0"}
        assert found.project_dependencies == ()
        work = tmp_path / "work"
        work.mkdir()
        written = write_install_input(found, work, uv_bin, uv_env(tmp_path, index))
        assert index.control.requests[requests_before:] == []  # no resolution, no network
    assert "orch-locked==1.0" in written.read_text().splitlines()

    # The pin shows up against a header that wants the newer one.
    notebook(
        project, "sales.py", header='# /// script\n# dependencies = ["orch-locked>=2"]\n# ///\n'
    )
    assert conflicts(declared(project)) == (
        "orch-locked: sales.py asks for orch-locked>=2, uv.lock for orch-locked==1.0",
    )

    # A pyproject edited without re-locking: a clear error naming both files.
    (project / "pyproject.toml").write_text(PYPROJECT.format(deps='"orch-locked>=2"'))
    with pytest.raises(PermanentError) as raised:
        write_install_input(declared(project), work, uv_bin, uv_env(tmp_path))
    message = str(raised.value)
    assert f"{project / 'uv.lock'} does not match {project / 'pyproject.toml'}" in message
    assert "run `uv lock`" in message
    assert (project / "uv.lock").read_text().count('version = "1.0"') == 1  # not re-locked


def test_pyproject_alone_gives_its_dependencies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.format(deps='"attrs>=23", "marimo"'))
    found = declared(tmp_path)
    assert found.lock is None
    assert [str(d) for d in found.project_dependencies] == ["attrs>=23", "marimo"]
    work = tmp_path / "work"
    work.mkdir()
    lines = write_install_input(found, work, "uv-not-needed", {}).read_text().splitlines()
    assert lines[1:] == ["attrs>=23  # pyproject.toml"]


def test_include_forms_and_comments() -> None:
    from jobs.requirement_includes import includes, logical_lines

    assert logical_lines(
        "a \\\n  >=1  # why\n# only a comment\npkg @ https://x/p.whl#sha256=1\n"
    ) == [
        "a   >=1",
        "pkg @ https://x/p.whl#sha256=1",
    ]
    assert includes("-r a.txt") == [("requirement", "a.txt")]
    assert includes("-rb.txt") == [("requirement", "b.txt")]
    assert includes("--requirement=c.txt") == [("requirement", "c.txt")]
    assert includes("--constraint d.txt") == [("constraint", "d.txt")]
    assert includes("-ce.txt") == [("constraint", "e.txt")]
    assert includes("--extra-index-url https://x") == []


def test_path_url_and_repository_lines_are_found_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "attrs\n"
        "./wheels/orch_local-1.0-py3-none-any.whl  # next to the file\n"
        "-e ./localpkg\n"
        "git+https://example.com/org/repo.git@v1.2#egg=orch-repo\n"
        "orch-url @ https://example.com/f/orch_url-2.0.tar.gz \\\n"
        "  ; python_version > '3'\n"
        "-r extra.txt\n"
    )
    (tmp_path / "extra.txt").write_text("\n../sdists/orch_sdist-0.3.tar.gz\n")
    found = {ref.text: ref for ref in declared(tmp_path).references}
    described = {
        text: (ref.where(), ref.kind, ref.location, ref.name) for text, ref in found.items()
    }
    assert described == {
        "./wheels/orch_local-1.0-py3-none-any.whl": (
            "requirements.txt line 2",
            "path",
            "./wheels/orch_local-1.0-py3-none-any.whl",
            "orch-local",
        ),
        "-e ./localpkg": ("requirements.txt line 3", "path", "./localpkg", None),
        "git+https://example.com/org/repo.git@v1.2#egg=orch-repo": (
            "requirements.txt line 4",
            "vcs",
            "https://example.com/org/repo.git",
            "orch-repo",
        ),
        "orch-url @ https://example.com/f/orch_url-2.0.tar.gz   ; python_version > '3'": (
            "requirements.txt line 5",
            "url",
            "https://example.com/f/orch_url-2.0.tar.gz",
            "orch-url",
        ),
        "../sdists/orch_sdist-0.3.tar.gz": (
            "extra.txt line 2",
            "path",
            "../sdists/orch_sdist-0.3.tar.gz",
            "orch-sdist",
        ),
    }


def test_a_local_wheel_counts_by_its_stat_and_a_folder_by_its_build_files(tmp_path: Path) -> None:
    from jobs.declared_install import changes

    wheel = tmp_path / "orch_local-1.0-py3-none-any.whl"
    (tmp_path / "requirements.txt").write_text(f"./{wheel.name}\n./localpkg\n")
    first = declared(tmp_path)
    wheel.write_bytes(b"a wheel")  # appears
    appeared = declared(tmp_path)
    assert appeared.digest != first.digest
    assert changes(first, appeared) == f"./{wheel.name} changed"
    assert declared(tmp_path).digest == appeared.digest, "unchanged: the same digest"
    os.utime(wheel, ns=(0, 10**9))  # another build, same size
    assert declared(tmp_path).digest != appeared.digest
    (tmp_path / "localpkg").mkdir()
    folder = declared(tmp_path)
    (tmp_path / "localpkg" / "code.py").write_text("X = 1\n")
    assert declared(tmp_path).digest == folder.digest, "code in a folder is not its build"
    (tmp_path / "localpkg" / "pyproject.toml").write_text("[project]\nname = 'localpkg'\n")
    assert declared(tmp_path).digest != folder.digest


def test_relative_installer_settings_keep_their_meaning_from_another_folder(
    tmp_path: Path,
) -> None:
    from jobs.installers import anchored

    here = os.getcwd()
    assert anchored("uv.toml") == os.path.join(here, "uv.toml")
    assert anchored("wheels https://x/simple,/abs") == (
        f"{os.path.join(here, 'wheels')} https://x/simple,/abs"
    )


def test_header_indexes_become_options_and_two_defaults_are_reported(tmp_path: Path) -> None:
    def header(body: str) -> str:
        return "# /// script\n# dependencies = []\n# [tool.uv]\n" + body + "# ///\n"

    notebook(tmp_path, "a.py", header=header('# index-url = "https://one/simple"\n'))
    notebook(
        tmp_path,
        "b.py",
        header=header(
            '# find-links = ["/wheels"]\n'
            "# [[tool.uv.index]]\n"
            '# url = "https://extra/simple"\n'
            "# [[tool.uv.index]]\n"
            '# url = "https://private/simple"\n'
            "# explicit = true\n"
        ),
    )
    found = declared(tmp_path)
    assert found.index_options == (
        "--index-url https://one/simple",
        "--find-links /wheels",
        "--extra-index-url https://extra/simple",
    )
    assert any(
        "b.py: its header's explicit index https://private/simple" in p for p in found.problems
    )
    notebook(tmp_path, "c.py", header=header('# index-url = "https://two/simple"\n'))
    assert (
        "the notebooks' headers name different default indexes: a.py use https://one/simple; "
        "c.py use https://two/simple"
    ) in declared(tmp_path).problems


def test_local_paths_of_an_export_are_made_absolute(tmp_path: Path) -> None:
    from jobs.install_input import _absolute

    assert _absolute("-e ./lib", tmp_path) == f"-e {tmp_path / 'lib'}"
    assert _absolute("../shared", tmp_path / "p") == str(tmp_path / "shared")
    assert _absolute("attrs==23.1 ; python_version >= '3.8'", tmp_path) == (
        "attrs==23.1 ; python_version >= '3.8'"
    )


def test_a_header_line_for_a_package_already_installed_is_said_as_added(tmp_path: Path) -> None:
    """marimo installs first, then records the package in the header: the install that follows
    brings nothing new, and the summary says what the header now declares."""
    (tmp_path / "requirements.txt").write_text("attrs\n")
    notebook(tmp_path, "sales.py", header="")
    before = declared(tmp_path)
    recorded = '# /// script\n# dependencies = ["attrs==23.1", "numpy==2.1.3"]\n# ///\n'
    notebook(tmp_path, "sales.py", header=recorded)
    after = declared(tmp_path)
    added = header_additions(before, after)
    assert added == {"numpy": ["sales.py"]}, "attrs was declared already: nothing to say"
    venv = {"attrs": "23.1", "numpy": "2.1.3"}
    assert summary(venv, venv, after, added) == "numpy 2.1.3 added to sales.py's dependencies"
    # What the install itself brought is said as installed, not as added.
    assert summary({"attrs": "23.1"}, venv, after, added) == "numpy 2.1.3 installed for sales.py"
    # Not in the venv (uninstalled meanwhile): nothing is claimed.
    assert summary({"attrs": "23.1"}, {"attrs": "23.1"}, after, added) == ""
    assert header_additions(after, after) == {}


def test_what_an_install_changed_is_structured_for_the_status(tmp_path: Path) -> None:
    """The venv before and after, whichever installer ran: added, changed (a downgrade too),
    removed and recorded, each with the files that ask for it; dependencies listed without."""
    (tmp_path / "requirements.txt").write_text("orch-gamma==3.0\norch-beta\n")
    notebook(tmp_path, "sales.py", header="")
    before_sources = declared(tmp_path)
    recorded = '# /// script\n# dependencies = ["emoji==2.14"]\n# ///\n'
    notebook(tmp_path, "sales.py", header=recorded)
    after_sources = declared(tmp_path)
    added = header_additions(before_sources, after_sources)
    before = {"orch-beta": "1.0", "attrs": "24.1", "six": "1.16", "emoji": "2.14", "pip": "24.0"}
    after = {
        "orch-beta": "2.0",
        "attrs": "23.1",
        "orch-gamma": "3.0",
        "idna": "3.7",
        "emoji": "2.14",
        "pip": "24.0",
    }
    assert changes(before, after, after_sources, added) == {
        "added": [
            {"name": "orch-gamma", "version": "3.0", "for": ["requirements.txt"]},
            {"name": "idna", "version": "3.7", "for": []},
        ],
        "changed": [
            {"name": "orch-beta", "from": "1.0", "to": "2.0", "for": ["requirements.txt"]},
            {"name": "attrs", "from": "24.1", "to": "23.1", "for": []},
        ],
        "removed": [{"name": "six", "version": "1.16", "for": []}],
        "recorded": [{"name": "emoji", "version": "2.14", "for": ["sales.py"]}],
        "more": 0,
    }
    nothing = changes(after, after, after_sources, {})
    assert nothing == {"added": [], "changed": [], "removed": [], "recorded": [], "more": 0}
    # A large install lists what the sources ask for first, and counts the rest.
    many = {f"dep-{number:03}": "1.0" for number in range(LISTED + 10)}
    big = changes({}, {**many, "orch-gamma": "3.0"}, after_sources, {})
    assert big["added"][0]["name"] == "orch-gamma"
    assert len(big["added"]) == LISTED and big["more"] == 11
