"""What uv's and pip's output means: progress for the page, and failures classified as
transient (retried) or permanent (reported at once, naming the requirement).

Invariants (each checked against real uv and pip output, tests/test_installer_output.py):
- an answer that cannot change is permanent at once: a project the index does not have, no
  version matching the specifier (uv's resolver only concludes once every index answered, so
  its "No solution found" is final whatever else it printed; pip's "No matching distribution"
  is final unless pip also reports connection trouble, after which it says the same);
- a full disk is a :class:`DiskFullError` (permanent until space is freed);
- a failing path, URL or repository line is reported as that, naming its file and line
  (jobs/direct_references.py), never as the package index's fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobs.direct_references import DirectReference, blamed
from jobs.errors import DiskFullError, JobError, PermanentError, TransientError
from jobs.installers import InstallerName


class ProgressParser:
    """Turns installer output into (message, fraction) updates; fractions only grow.

    Invariants (the page shows these words and this fraction as they are):
    - a count is said against a total only when the installer has said the total is final:
      pip's "Installing collected packages: a, b, c" (after its resolution), uv's "Installed N
      packages"; while pip resolves ("Collecting …", "Downloading …" one package at a time)
      the number it will end with is unknown, so what is done is counted "so far", never "N of
      M" (a total that grows with the count always reads as finished);
    - while the amount of work is unknown the fraction approaches the end of that phase
      without reaching it, so it never claims a phase is over before the installer says so.
    """

    _UV_RESOLVED = re.compile(r"^Resolved (\d+) packages?")
    _UV_PREPARED = re.compile(r"^(Prepared|Downloaded) (\d+) packages?")
    _UV_INSTALLED = re.compile(r"^Installed (\d+) packages?")
    _UV_ADDED = re.compile(r"^ \+ (\S+)")
    _PIP_COLLECTING = re.compile(r"^Collecting (\S+)")
    _PIP_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)(?: \(([^)]+)\))?")
    _PIP_INSTALLING = re.compile(r"^Installing collected packages: (.+)$")
    _PIP_DONE = re.compile(r"^Successfully installed (.+)$")

    RESOLVING_END = 0.6
    """Where pip's open-ended phase (finding and downloading) ends on the bar."""

    def __init__(self) -> None:
        self.fraction = 0.0
        self.collected = 0
        self.downloaded = 0

    def _advance(self, fraction: float) -> float:
        self.fraction = max(self.fraction, min(fraction, 1.0))
        return self.fraction

    def _resolving(self) -> float:
        """pip's finding and downloading: each line a step closer to the phase's end, never
        reaching it (the number of packages is not known yet)."""
        events = self.collected + self.downloaded
        return self._advance(self.RESOLVING_END * (1 - 0.93**events))

    def feed(self, line: str) -> tuple[str, float] | None:
        if match := self._UV_RESOLVED.match(line):
            return f"Resolved {match.group(1)} packages", self._advance(0.3)
        if match := self._UV_PREPARED.match(line):
            return f"Downloaded {match.group(2)} packages", self._advance(0.7)
        if match := self._UV_INSTALLED.match(line):
            return f"Installed {match.group(1)} packages", self._advance(0.95)
        if match := self._UV_ADDED.match(line):
            return f"Installed {match.group(1)}", self._advance(self.fraction)
        if match := self._PIP_COLLECTING.match(line):
            self.collected += 1
            found = f" ({self.collected} found so far)" if self.collected > 1 else ""
            return f"Finding {match.group(1)}{found}", self._resolving()
        if match := self._PIP_DOWNLOADING.match(line):
            self.downloaded += 1
            name = match.group(1).rsplit("/", 1)[-1]
            size = f" ({match.group(2)})" if match.group(2) else ""
            so_far = f"; {self.downloaded} downloaded so far" if self.downloaded > 1 else ""
            return f"Downloading {name}{size}{so_far}", self._resolving()
        if match := self._PIP_INSTALLING.match(line):
            count = len(match.group(1).split(","))
            noun = "package" if count == 1 else "packages"
            return f"Installing {count} {noun}", self._advance(self.RESOLVING_END + 0.05)
        if match := self._PIP_DONE.match(line):
            count = len(match.group(1).split())
            noun = "package" if count == 1 else "packages"
            return f"Installed {count} {noun}", self._advance(0.95)
        return None


_CULPRITS = (
    # uv: "Because x was not found in the package registry and you require x, …" (also "in
    # the provided package locations" with --find-links, "in the cache" offline).
    re.compile(r"Because (\S+?) was not found in the (?:package registry|provided package|cache)"),
    # uv: "Because there is no version of x==9 and you require x==9, …"
    re.compile(r"Because there is no version of (\S+?)(?:,| and |$)"),
    # uv: "Because only x==1.0 is available and you require x>=5, …": name what was asked.
    re.compile(r"Because only \S+ (?:is|are) available and you require (\S+?)(?:,| and |$)"),
    re.compile(r"you require (\S+?)(?:,| and |$)"),
    # pip: "No matching distribution found for x>=5"
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
)
_TRANSIENT_MARKERS = (
    "connection reset",
    "connection refused",
    "connection aborted",
    "timed out",
    "timeout",
    "503 service unavailable",
    "502 bad gateway",
    "504 gateway",
    "500 internal server error",
    "server error",
    "error sending request",
    "failed to fetch",
    "failed to download",
    "retrying (retry(",
    "temporary failure in name resolution",
    "connectionerror",
    "incompleteread",
    "request failed after",
)
_PERMANENT_MARKERS = (
    "no solution found",
    "conflicting dependencies",
    "resolutionimpossible",
    "invalid requirement",
    "couldn't parse requirement",
    "failed to parse",
    "is not a valid",
    "no such file or directory",
)


def _cannot_install(culprit: str, explanation: str, sources: Mapping[str, str]) -> PermanentError:
    """The resolver refused ``culprit`` (before anything was installed: uv and pip resolve
    first): the line that asks for it, when known, and what to do about it; the installer's
    words apart (``detail``)."""
    from jobs.dist_metadata import canonical

    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", culprit)
    where = sources.get(canonical(name.group(0))) if name else None
    if where is None:
        return PermanentError(f"cannot install {culprit!r}, so nothing was installed", explanation)
    return PermanentError(
        f"{where}: cannot install {culprit!r}, so nothing was installed; fix or remove that "
        "line and the install runs again by itself once the file is saved",
        explanation,
    )


def classify_failure(
    installer: InstallerName,
    exit_code: int,
    output: list[str],
    where: Path | None = None,
    timeout: str | None = None,
    references: Sequence[DirectReference] = (),
    folder: Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> JobError:
    """The installer failed: is it worth retrying, and which requirement is to blame?

    A full disk (``where`` is the volume installs write to) is permanent and says how much is
    free; a stalled download is transient and names the timeout that ended it; a path, URL or
    repository line among ``references`` that the error names is reported with its line
    (``folder``: where the installer ran, which relative paths are resolved against); a
    requirement that cannot be installed is named with the line that asks for it (``sources``:
    canonical name → ``requirements.txt line 2``), with what to do about it.

    The error's message is ours; the installer's own words are its ``detail`` only, never
    repeated in the message (pages fold them under "details")."""
    text = "\n".join(output)
    lowered = text.lower()
    explanation = _explanation(output)
    if any(marker in lowered for marker in _DISK_FULL_MARKERS):
        return DiskFullError(_disk_full(where), explanation)
    if any(marker in lowered for marker in _NO_GIT):
        return _no_git(references, explanation)
    if (reference := blamed(references, _error_part(output), folder)) is not None:
        return _reference_failed(reference, lowered, _reason(output))
    culprit = None
    for pattern in _CULPRITS:
        if match := pattern.search(text):
            culprit = match.group(1).strip("`'\",.")
            break
    if installer == "uv" and "no solution found" in lowered:
        # The resolver's conclusion: every index answered, so another try answers the same.
        if culprit:
            return _cannot_install(culprit, explanation, sources or {})
        return PermanentError("uv could not resolve the requirements", explanation)
    if stalled := _stalled(installer, lowered, timeout):
        return TransientError(stalled, explanation)
    transient = any(marker in lowered for marker in _TRANSIENT_MARKERS)
    if culprit and not transient:
        return _cannot_install(culprit, explanation, sources or {})
    if transient:
        return TransientError(f"{installer} could not reach the package index", explanation)
    if any(marker in lowered for marker in _PERMANENT_MARKERS):
        return PermanentError(f"{installer} failed", explanation)
    return TransientError(f"{installer} exited with code {exit_code}", explanation)


_REFERENCE_GONE = (
    "not found",
    "does not exist",
    "no such file or directory",
    "repository not found",
    "authentication failed",
    "could not read username",
    "terminal prompts disabled",
    "returned error: 4",  # git: "The requested URL returned error: 404"
    "client error (4",  # uv: "HTTP status client error (404 Not Found)"
    "404 client error",  # pip
    "403 client error",
    "401 client error",
    "is not a valid",
)
_NETWORK = (
    *_TRANSIENT_MARKERS,
    "couldn't connect",
    "failed to connect",
    "could not resolve host",
    "tcp connect error",
    "max retries exceeded",
    "newconnectionerror",
)


_NO_GIT = ("git executable not found", "cannot find command 'git'")


def _no_git(references: Sequence[DirectReference], explanation: str) -> PermanentError:
    """A ``git+`` line, and no git command to fetch it with (uv and pip both run git)."""
    lacking = "the git command is not installed here (a git+ requirement needs it)"
    for reference in references:
        if reference.kind == "vcs" and reference.location.startswith(("http", "ssh", "git")):
            return PermanentError(
                f"could not fetch {reference.text} ({reference.where()}): {lacking}"
            )
    return PermanentError(lacking, explanation)


def _reference_failed(reference: DirectReference, lowered: str, explanation: str) -> JobError:
    """A path, URL or repository line failed: say which, and retry only a network failure."""
    verb = "install" if reference.kind == "path" else "fetch"
    # The reason is git's or the installer's shortest word on it: kept in the message.
    message = f"could not {verb} {reference.text} ({reference.where()}): {explanation}"
    gone = any(marker in lowered for marker in _REFERENCE_GONE)
    if not gone and any(marker in lowered for marker in _NETWORK):
        return TransientError(message)
    return PermanentError(message)


def _reason(output: list[str]) -> str:
    """A reference's failure in few words: git's own ``fatal:`` lines, else the installer's
    first error line with its deepest cause."""
    fatal = list(
        dict.fromkeys(line.strip() for line in output if line.strip().startswith("fatal:"))
    )
    if fatal:
        return " ".join(fatal)
    errors = _error_lines(output)
    if not errors:
        return _explanation(output)
    return " ".join(dict.fromkeys([errors[0], errors[-1]]))


def _error_part(output: list[str]) -> list[str]:
    """The lines from the installer's first error line on (what it said went wrong, not the
    URLs it was merely fetching before)."""
    for index, line in enumerate(output):
        if line.strip().lower().startswith(("error", "×")):
            return output[index:]
    return output


_DISK_FULL_MARKERS = ("no space left on device", "os error 28", "errno 28", "disk quota exceeded")


def _disk_full(where: Path | None) -> str:
    if where is None:
        return "the disk is full (no space left on device)"
    import shutil

    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return f"the disk holding {where} is full (no space left on device)"
    return (
        f"the disk holding {where} is full: {free / 1e6:.1f} MB free, and the install "
        "needs more (no space left on device); free space or use a larger volume"
    )


def _stalled(installer: InstallerName, lowered: str, timeout: str | None) -> str:
    """Why a download ended by a timeout, naming it; empty when it was not one."""
    if not any(word in lowered for word in ("timed out", "timeout")):
        return ""
    limit = f" after {timeout} s without data" if timeout else ""
    setting = " (UV_HTTP_TIMEOUT)" if installer == "uv" else " (pip's --timeout)"
    return f"a download from the package index stalled: {installer} gave up{limit}{setting}"


def _explanation(output: list[str], limit: int = 6) -> str:
    """The installer's own words: its error lines, else its last lines."""
    errors = _error_lines(output)
    chosen = errors[:limit] if errors else [line.strip() for line in output[-limit:]]
    return " ".join(part for part in chosen if part) or "no output"


def _error_lines(output: list[str]) -> list[str]:
    return [
        line.strip()
        for line in output
        # uv's "cause:" lines (uv 0.9 on) carry the plain reason: "Because x was not found in
        # the package registry".
        if line.strip()
        .lower()
        .startswith(
            ("error", "×", "├─▶", "╰─▶", "caused by", "cause:", "because", "hint", "fatal:")
        )
        or "error:" in line.lower()
    ]
