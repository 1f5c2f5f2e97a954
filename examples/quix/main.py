import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium")


@app.cell
def _():
    import json
    import os
    import time
    from pathlib import Path

    import marimo as mo

    return Path, json, mo, os, time


@app.cell
def _(mo):
    mo.md("""
    # marimo on Quix Cloud

    This notebook runs from a venv kept on the deployment's **state volume**: packages
    installed with marimo's *Install* button or listed in `requirements.txt` survive
    restarts and redeploys, and an unchanged `requirements.txt` is not installed again.
    """)
    return


@app.cell
def _(mo, os):
    names = (
        "Quix__Workspace__Id",
        "Quix__Deployment__Name",
        "Quix__Deployment__Network__PublicUrl",
        "Quix__Deployment__State__Path",
    )
    mo.ui.table(
        [{"variable": name, "value": os.environ.get(name, "(not set)")} for name in names],
        selection=None,
        label="What Quix told this deployment",
    )
    return


@app.cell
def _(Path, json, mo, os, time):
    import humanize  # from requirements.txt

    state = Path(os.environ.get("Quix__Deployment__State__Path", "/app/state"))
    try:
        install = json.loads((state / "manifest.json").read_text())["install"]
        when = humanize.naturaltime(time.time() - install["finished_at"])
        took = humanize.precisedelta(install["duration"], minimum_unit="milliseconds")
        message = (
            f"`requirements.txt` was installed {when}, in {took}, with {install['installer']}."
        )
    except (OSError, KeyError, TypeError, ValueError):
        message = "No install recorded yet in the state folder."
    mo.md(message)
    return


if __name__ == "__main__":
    app.run()
