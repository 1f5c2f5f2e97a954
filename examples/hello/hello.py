import marimo

__generated_with = "0.25.2"
app = marimo.App()


@app.cell
def _():
    import marimo as mo

    mo.md("# Hello from marimo-orchestrator")
    return (mo,)


@app.cell
def _():
    import cowsay

    print(cowsay.get_output_string("cow", "Installed in the background, kept across restarts"))
    return


if __name__ == "__main__":
    app.run()
