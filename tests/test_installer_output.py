"""What installers print is turned into progress, classified failures, and redacted lines."""

from __future__ import annotations

import re

from jobs.errors import PermanentError, TransientError
from jobs.installer_output import ProgressParser, classify_failure
from jobs.redact import redact

UV_MISSING = [
    "Using Python 3.11.7 environment at: state/venv",
    "  × No solution found when resolving dependencies:",
    "  ╰─▶ Because no-such-package-xyz was not found in the package registry and you require",
    "      no-such-package-xyz, we can conclude that your requirements are unsatisfiable.",
]
UV_MISSING_WITH_CAUSE = [  # uv 0.9's wording
    "Using Python 3.11.7 environment at: state/venv",
    "error: No solution found when resolving dependencies",
    "  cause: Because no-such-package-xyz was not found in the package registry and you require"
    " no-such-package-xyz, we can conclude that your requirements are unsatisfiable.",
]
UV_503 = [
    "error: Failed to fetch: `http://127.0.0.1:1234/simple/orch-alpha/`",
    "  Caused by: HTTP status server error (503 Service Unavailable) for url (http://127.0.0.1:1234/simple/orch-alpha/)",
]
PIP_MISSING = [
    "Looking in indexes: http://127.0.0.1:1234/simple",
    "ERROR: Could not find a version that satisfies the requirement no-such-package-xyz (from versions: none)",
    "ERROR: No matching distribution found for no-such-package-xyz",
]
PIP_UNREACHABLE = [
    "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError(...Connection refused)': /simple/orch-alpha/",
    "ERROR: Could not find a version that satisfies the requirement orch-alpha (from versions: none)",
    "ERROR: No matching distribution found for orch-alpha",
]


def test_a_missing_package_is_permanent_and_named() -> None:
    for installer, output in (("uv", UV_MISSING), ("pip", PIP_MISSING)):
        error = classify_failure(installer, 1, output)  # type: ignore[arg-type]
        assert isinstance(error, PermanentError)
        assert "no-such-package-xyz" in str(error)


def test_a_missing_package_names_the_line_that_asks_for_it() -> None:
    sources = {"no-such-package-xyz": "extra.txt line 4"}
    for installer, output in (("uv", UV_MISSING), ("pip", PIP_MISSING)):
        error = classify_failure(installer, 1, output, sources=sources)  # type: ignore[arg-type]
        assert str(error).startswith("extra.txt line 4: cannot install"), error
        assert "nothing was installed" in str(error), error
    unknown = classify_failure("uv", 1, UV_MISSING, sources={"other": "x line 1"})
    assert str(unknown).startswith("cannot install"), "no line is invented"


def test_an_unreachable_index_is_transient() -> None:
    for installer, output in (("uv", UV_503), ("pip", PIP_UNREACHABLE)):
        error = classify_failure(installer, 1, output)  # type: ignore[arg-type]
        assert isinstance(error, TransientError), (installer, error)


def test_uv_progress_grows_to_done() -> None:
    parser = ProgressParser()
    updates = [
        parser.feed(line)
        for line in (
            "Resolved 3 packages in 5ms",
            "Prepared 2 packages in 9ms",
            "Installed 2 packages in 3ms",
            " + orch-alpha==1.0",
        )
    ]
    fractions = [u[1] for u in updates if u]
    assert fractions == sorted(fractions) and fractions[-1] >= 0.95
    assert updates[-1] and "orch-alpha==1.0" in updates[-1][0]


def test_pip_progress_names_the_package() -> None:
    parser = ProgressParser()
    first = parser.feed("Collecting orch-alpha")
    assert first and first[0] == "Finding orch-alpha"
    last = parser.feed("Successfully installed orch-alpha-1.0")
    assert last and last[1] >= 0.95 and last[0] == "Installed 1 package"


def test_credentials_are_redacted() -> None:
    line = "Looking in indexes: https://alice:s3cret@pypi.example.com/simple?token=abc123"
    clean = redact(line)
    assert "s3cret" not in clean and "alice" not in clean and "abc123" not in clean
    assert "pypi.example.com/simple" in clean
    assert (
        redact("URL: http://localhost:1?access_token=zzz")
        == "URL: http://localhost:1?access_token=***"
    )
    assert "tok-9" not in redact("value tok-9 here", ("tok-9",))


def test_uvs_cause_line_is_the_detail_and_the_message_is_ours() -> None:
    error = classify_failure("uv", 1, UV_MISSING_WITH_CAUSE)
    assert isinstance(error, PermanentError)
    assert "no-such-package-xyz was not found in the package registry" in error.detail
    assert str(error) == "cannot install 'no-such-package-xyz', so nothing was installed"
    assert "package registry" not in str(error), "the installer's words are said once, apart"


def test_uvs_downloads_are_not_counted_against_a_total_it_never_gave() -> None:
    parser = ProgressParser()
    parser.feed("Resolved 12 packages in 1.2s")
    update = parser.feed("Downloading numpy (16.1MiB)")
    assert update is not None and update[0] == "Downloading numpy (16.1MiB)"  # not "(1 of 0)"


def test_pips_count_is_said_against_a_total_only_once_the_total_is_final() -> None:
    """pip finds and downloads one package at a time: while it does, how many it will install
    is unknown, so what is done is counted "so far" (a total that grows with the count, "(4 of
    4)", always looks finished), and the bar approaches the phase's end without reaching it;
    "Installing collected packages" gives the final number."""
    pip = ProgressParser()
    said: list[tuple[str, float]] = []
    for number in range(15):
        for line in (
            f"Collecting orch-p{number:02d}==1.0 (from -r requirements.txt (line {number + 1}))",
            f"  Downloading http://127.0.0.1:1/files/orch_p{number:02d}-1.0-py3-none-any.whl"
            " (201 kB)",
        ):
            update = pip.feed(line)
            assert update is not None
            said.append(update)
    assert not any(re.search(r"\d+ of \d+", text) for text, _ in said), said
    assert said[-1][0] == "Downloading orch_p14-1.0-py3-none-any.whl (201 kB); 15 downloaded so far"
    fractions = [fraction for _, fraction in said]
    assert fractions == sorted(fractions) and fractions[-1] < ProgressParser.RESOLVING_END
    names = ", ".join(f"orch-p{number:02d}" for number in range(15))
    installing = pip.feed(f"Installing collected packages: {names}")
    assert installing is not None and installing[0] == "Installing 15 packages"
    assert installing[1] > fractions[-1]


def test_a_git_line_without_git_says_so_naming_the_line() -> None:
    from jobs.direct_references import parse

    line = "git+https://example.com/org/x.git"
    reference = parse(line, "requirements.txt", 3)
    assert reference is not None
    outputs = {  # uv 0.13 and pip 26 with no git on PATH
        "uv": [
            "   Updating https://example.com/org/x.git (HEAD)",
            "error: Git operation failed",
            "  cause: Git executable not found. Ensure that Git is installed and available.",
        ],
        "pip": [
            "  ERROR: Error [Errno 2] No such file or directory: 'git' while executing command git",
            "ERROR: Cannot find command 'git' - do you have 'git' installed and in your PATH?",
        ],
    }
    for installer, output in outputs.items():
        error = classify_failure(installer, 1, output, references=[reference])  # type: ignore[arg-type]
        assert isinstance(error, PermanentError), error
        assert str(error) == (
            f"could not fetch {line} (requirements.txt line 3): the git command is not "
            "installed here (a git+ requirement needs it)"
        )
