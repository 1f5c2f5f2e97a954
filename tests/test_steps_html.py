"""The loading page's steps without JavaScript (``orchestrator.web.handlers.steps_html``): a
running or finished step's internals (paths, pids, the venv) are not shown, a failure's reason
always is, escaped."""

from __future__ import annotations

from orchestrator.web.handlers import steps_html


def test_a_running_steps_internals_are_left_out() -> None:
    html = steps_html(
        [{"name": "venv", "status": "running", "message": "Building the venv at /app/state/venv"}]
    )
    assert "Python" in html and "/app/state" not in html and "venv at" not in html


def test_a_failures_reason_is_said_even_with_a_path_or_a_url() -> None:
    reason = (
        "could not fetch git+https://example.invalid/o/r.git (requirements.txt line 3): "
        "fatal: repository not found"
    )
    html = steps_html(
        [
            {"name": "requirements", "status": "failed", "message": reason},
            {"name": "state", "status": "failed", "message": "the disk holding /app/state is full"},
        ]
    )
    assert "requirements.txt line 3" in html and "git+https://example.invalid/o/r.git" in html
    assert "the disk holding /app/state is full" in html


def test_a_failures_reason_is_escaped() -> None:
    html = steps_html([{"name": "requirements", "status": "failed", "message": "<b>x</b> & y"}])
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>" not in html
