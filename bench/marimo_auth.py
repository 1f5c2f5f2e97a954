"""What marimo itself spends on a request that carries its token, side by side in one run.

    .venv/bin/python bench/marimo_auth.py [--rounds 3] [--duration 4]

The orchestrator starts marimo with a token (``--token-password-file``) and sends it on every
proxied request, because a pod's containers share ``127.0.0.1``; nginx as the earlier images
configured it (and ``bench/proxy.py``'s nginx) sends marimo no credentials. This measures that
difference on marimo alone: one marimo with a token, ``wrk`` straight at ``/health`` (public in
marimo) with no credentials, with ``Authorization: Bearer <token>`` (what the orchestrator
sends), with the session cookie marimo hands out in exchange, with everything the orchestrator
sends at once (both, and its ``X-Forwarded-*`` headers), and with ``X-Forwarded-*`` alone. marimo's CPU per request
comes from ``/proc``; contenders alternate; medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.orchestrator import free_port, hermetic_env  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token-not-a-secret"
NOTEBOOK = "import marimo\napp = marimo.App()\n\n@app.cell\ndef _():\n    return\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run(
    wrk: str, url: str, headers: list[str], connections: int, duration: int, pid: int
) -> tuple[float, float]:
    """req/s and marimo's CPU µs per request for one wrk run."""
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", url]
    for header in headers:
        argv += ["-H", header]
    before = cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    spent = cpu_seconds(pid) - before
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out:
        raise SystemExit(f"marimo refused some requests:\n{out}")
    return rps, 1e6 * spent / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (bench/proxy.py does it)")
    work = Path(tempfile.mkdtemp(prefix="bench-marimo-auth-"))
    (work / "notebook.py").write_text(NOTEBOOK)
    port = free_port()
    marimo = subprocess.Popen(
        [sys.executable, "-m", "marimo", "edit", str(work), "--headless", "--host", "127.0.0.1",
         "-p", str(port), "--token-password", TOKEN, "--skip-update-check"],
        env=hermetic_env({}), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd=work,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/health"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or marimo.poll() is not None:
                    raise SystemExit("marimo did not come up") from None
                time.sleep(0.05)  # an external process coming up: nothing else to wait on
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request) as response:
            cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        kinds = {
            "no credentials (nginx as configured)": [],
            "Authorization: Bearer (what the orchestrator sends)": [
                f"Authorization: Bearer {TOKEN}"
            ],
            "marimo's session cookie": [f"Cookie: {cookie}"],
            "all the orchestrator sends: both, and X-Forwarded-*": [
                f"Authorization: Bearer {TOKEN}",
                f"Cookie: {cookie}",
                "X-Forwarded-For: 127.0.0.1",
                "X-Forwarded-Proto: http",
                f"X-Forwarded-Host: 127.0.0.1:{port}",
            ],
            "X-Forwarded-* alone": [
                "X-Forwarded-For: 127.0.0.1",
                "X-Forwarded-Proto: http",
                f"X-Forwarded-Host: 127.0.0.1:{port}",
            ],
        }
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        subprocess.run([wrk, "-t1", "-c1", "-d1s", url], capture_output=True, check=True)
        for _ in range(args.rounds):
            for connections in (1, 16):
                for name, headers in kinds.items():
                    results.setdefault((name, connections), []).append(
                        run(wrk, url, headers, connections, args.duration, marimo.pid)
                    )
    finally:
        os.killpg(marimo.pid, signal.SIGTERM)
        marimo.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)
    print(f"marimo alone, `/health`, wrk -t1, medians of {args.rounds} runs of {args.duration} s\n")
    print("| request carries | connections | req/s | vs none | marimo CPU µs/req | vs none |")
    print("|---|---:|---:|---:|---:|---:|")
    for connections in (1, 16):
        base_rps = statistics.median(r for r, _ in results[(next(iter(kinds)), connections)])
        base_cpu = statistics.median(c for _, c in results[(next(iter(kinds)), connections)])
        for name in kinds:
            rps = statistics.median(r for r, _ in results[(name, connections)])
            cpu = statistics.median(c for _, c in results[(name, connections)])
            print(
                f"| {name} | {connections} | {rps:.0f} | {rps / base_rps:.2f}× | {cpu:.0f} "
                f"| {cpu - base_cpu:+.0f} |"
            )


if __name__ == "__main__":
    main()
