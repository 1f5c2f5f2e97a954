"""Running one installer command (uv or pip) for a step: its output streamed to the log and
read for progress, its failure classified (jobs/installer_output.py).

Invariants: every line is redacted before it is logged or kept (jobs/redact.py), the command
line too; the installer runs with the installer's environment for the layout
(:meth:`jobs.installers.Installer.environment`) and an unbounded terminal width (uv wraps its
messages to ``COLUMNS``, and a cause wrapped over lines would be read cut short), from the
requirements file's folder when the declared sources are given (relative paths in the file mean
what they mean next to it); a failing run raises the :class:`jobs.errors.JobError` that says
what failed, naming the file and line of a failing path, URL or repository line.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from jobs.installer_output import ProgressParser, classify_failure
from jobs.installers import Installer
from jobs.layout import StateLayout
from jobs.processes import lines, spawn
from jobs.redact import redact
from jobs.reporting import Reporter
from jobs.sources import Declared

UNWRAPPED = "100000"
"""``COLUMNS`` for the installer: wider than any message it writes, so each stays one line."""


class InstallerRun:
    """Runs installer commands for one step, streaming their output as log and progress.

    With ``declared``, the installer runs from the requirements file's folder (relative paths
    in the file mean what they mean next to it), and a failing path, URL or repository line is
    reported with its file and line."""

    def __init__(
        self,
        installer: Installer,
        layout: StateLayout,
        env: Mapping[str, str],
        reporter: Reporter,
        declared: Declared | None = None,
    ) -> None:
        self.installer = installer
        self.layout = layout
        self.env = {**installer.environment(env, layout), "COLUMNS": UNWRAPPED}
        self.reporter = reporter
        self.parser = ProgressParser()
        self.folder = None if declared is None else declared.install_folder
        self.references = () if declared is None else declared.references
        self.asked_where = {} if declared is None else declared.asked_where()

    async def __call__(self, argv: list[str]) -> list[str]:
        where = "" if self.folder is None else f" in {self.folder}"
        self.reporter.log(
            "requirements", "orchestrator", redact(f"Running {shlex.join(argv)}{where}")
        )
        process = await spawn(argv, env=self.env, cwd=self.folder)
        output: list[str] = []
        async for line in lines(process):
            clean = redact(line)
            output.append(clean)
            self.reporter.log("requirements", self.installer.name, clean)
            if update := self.parser.feed(clean):
                self.reporter.step_progress("requirements", update[0], update[1])
        code = await process.wait()
        if code != 0:
            timeout = self.env.get("UV_HTTP_TIMEOUT") if self.installer.name == "uv" else "30"
            raise classify_failure(
                self.installer.name,
                code,
                output,
                self.layout.root,
                timeout,
                self.references,
                self.folder,
                self.asked_where,
            )
        return output
