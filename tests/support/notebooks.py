"""Notebook sources the tests serve."""

NOTEBOOK = """import marimo

app = marimo.App()


@app.cell
def _():
    import orch_alpha
    orch_alpha.NAME
    return


if __name__ == "__main__":
    app.run()
"""
