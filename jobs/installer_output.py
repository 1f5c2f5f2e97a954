"""What uv's and pip's output means: progress for the page, and failures classified as
transient (retried) or permanent (reported at once, naming the requirement)."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.errors import JobError, PermanentError, TransientError
from jobs.installers import InstallerName


class ProgressParser:
    """Turns installer output into (message, fraction) updates; fractions only grow."""

    _UV_RESOLVED = re.compile(r"^Resolved (\d+) packages?")
    _UV_PREPARED = re.compile(r"^(Prepared|Downloaded) (\d+) packages?")
    _UV_INSTALLED = re.compile(r"^Installed (\d+) packages?")
    _UV_ADDED = re.compile(r"^ \+ (\S+)")
    _PIP_COLLECTING = re.compile(r"^Collecting (\S+)")
    _PIP_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)(?: \(([^)]+)\))?")
    _PIP_INSTALLING = re.compile(r"^Installing collected packages: (.+)$")
    _PIP_DONE = re.compile(r"^Successfully installed (.+)$")

    def __init__(self) -> None:
        self.fraction = 0.0
        self.collected = 0
        self.downloaded = 0

    def _advance(self, fraction: float) -> float:
        self.fraction = max(self.fraction, min(fraction, 1.0))
        return self.fraction

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
            # Resolution is open-ended: approach 0.4 without reaching it.
            return f"Collecting {match.group(1)}", self._advance(0.4 * (1 - 0.8**self.collected))
        if match := self._PIP_DOWNLOADING.match(line):
            self.downloaded += 1
            name = match.group(1).rsplit("/", 1)[-1]
            size = f" ({match.group(2)})" if match.group(2) else ""
            # pip announces each package ("Collecting") before downloading it; uv does not, and
            # its resolved count includes what is already installed: no total to count against.
            counted = self.collected >= self.downloaded
            done = self.downloaded / self.collected if counted else 1.0
            counter = f" ({self.downloaded} of {self.collected})" if counted else ""
            return f"Downloading {name}{size}{counter}", self._advance(0.4 + 0.3 * done)
        if match := self._PIP_INSTALLING.match(line):
            count = len(match.group(1).split(","))
            return f"Installing {count} packages", self._advance(0.75)
        if match := self._PIP_DONE.match(line):
            return f"Installed {match.group(1)}", self._advance(0.95)
        return None


_UV_NOT_FOUND = re.compile(r"Because (\S+?) was not found in the package registry")
_UV_NO_VERSION = re.compile(r"Because (?:there is no version of|only \S+ is available and) (\S+)")
_PIP_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
_PIP_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement (\S+)")
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


def classify_failure(
    installer: InstallerName,
    exit_code: int,
    output: list[str],
    where: Path | None = None,
    timeout: str | None = None,
) -> JobError:
    """The installer failed: is it worth retrying, and which requirement is to blame?

    A full disk (``where`` is the volume installs write to) is permanent and says how much is
    free; a stalled download is transient and names the timeout that ended it."""
    text = "\n".join(output)
    lowered = text.lower()
    explanation = _explanation(output)
    if any(marker in lowered for marker in _DISK_FULL_MARKERS):
        return PermanentError(f"{_disk_full(where)}: {explanation}")
    if stalled := _stalled(installer, lowered, timeout):
        return TransientError(f"{stalled}: {explanation}")
    culprit = None
    for pattern in (_UV_NOT_FOUND, _UV_NO_VERSION, _PIP_NOT_FOUND, _PIP_NO_VERSION):
        if match := pattern.search(text):
            culprit = match.group(1).strip("`'\",.")
            break
    transient = any(marker in lowered for marker in _TRANSIENT_MARKERS)
    if culprit and not transient:
        return PermanentError(f"cannot install {culprit!r}: {explanation}")
    if transient:
        return TransientError(f"{installer} could not reach the package index: {explanation}")
    if any(marker in lowered for marker in _PERMANENT_MARKERS):
        return PermanentError(f"{installer} failed: {explanation}")
    return TransientError(f"{installer} exited with code {exit_code}: {explanation}")


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
    errors = [
        line.strip()
        for line in output
        # uv's "cause:" lines (uv 0.9 on) carry the plain reason: "Because x was not found in
        # the package registry".
        if line.strip()
        .lower()
        .startswith(("error", "×", "├─▶", "╰─▶", "caused by", "cause:", "because", "hint"))
        or "error:" in line.lower()
    ]
    chosen = errors[:limit] if errors else [line.strip() for line in output[-limit:]]
    return " ".join(part for part in chosen if part) or "no output"
