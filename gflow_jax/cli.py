"""The ``gflow`` command: run, resume, report and inspect the registered studies.

``gflow list`` names the studies; ``gflow run NAME`` runs one (float64, progress bars,
every finished chunk stored in ``OUT/store`` at once) and writes ``OUT/NAME.nc`` and its
report (``OUT/NAME.png``, ``.pdf``, ``.md``); ``gflow resume OUT`` finishes a run that
was killed; ``gflow report OUT`` redraws the report from the stored dataset;
``gflow info OUT`` shows the configuration, package versions and progress.

A run folder holds ``run.json`` (study, scale, configuration, precision), the sweep
store ``store/`` (its manifest ``store/sweep.json`` and one file per finished piece)
and, once finished, the dataset and the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from .experiments import SCALES, STUDIES, load
from .experiments._config import (
    ConfigError,
    build_config,
    config_dict,
    load_toml,
    parse_assignments,
    resolve_devices,
)

app = typer.Typer(
    name="gflow",
    help="Gradient-flow studies of neural-network training (gflow_jax): run, resume, "
    "report and inspect them. Each study has presets per scale (tiny: seconds, laptop: "
    "minutes on 2 CPU cores, paper: the full study).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RUN_FILE = "run.json"

DevicesOption = Annotated[
    str | None,
    typer.Option(
        "--devices",
        help="JAX devices over which the ensembles split their pools: all, a count N, a "
        "platform (cpu, gpu, tpu) or gpu:0,1 (default: one device)",
    ),
]


def _fail(message: str, code: int = 2):
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _read_run(out: Path) -> dict:
    path = out / RUN_FILE
    if not path.exists():
        _fail(f"{out} is not a gflow run folder (no {RUN_FILE}); start one with `gflow run`.")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        _fail(f"{path} is unreadable ({e}).")


def _client(executor: str, scheduler: str | None):
    """``None`` for the local executor, else a ``dask.distributed.Client``."""
    if executor == "local":
        if scheduler is not None:
            _fail("--scheduler needs --executor dask.")
        return None
    if executor != "dask":
        _fail(f"unknown executor {executor!r}; use local or dask.")
    try:
        from distributed import Client
    except ImportError:
        _fail("--executor dask needs Dask: pip install 'gflow_jax[distributed]'.")
    return Client(scheduler) if scheduler else Client(processes=True)


def _execute(
    name: str,
    config,
    scale: str,
    out: Path,
    x64: bool,
    overwrite: bool,
    executor: str = "local",
    scheduler: str | None = None,
    devices: str | None = None,
) -> None:
    """Run a study into `out`: record the run, run it (resumable), save and report."""
    import jax

    from ._storage import write_atomic
    from .sweep import differences, package_versions, write_json

    study = load(name)
    record = {"study": name, "scale": scale, "config": config_dict(config), "x64": x64}
    existing = out / RUN_FILE
    if existing.exists() and not overwrite:
        old = json.loads(existing.read_text())
        diff = differences({k: old.get(k) for k in ("study", "config", "x64")},
                           {k: record[k] for k in ("study", "config", "x64")})  # fmt: skip
        if diff:
            _fail(
                f"{out} holds a run with another configuration:\n  "
                + "\n  ".join(diff)
                + "\nUse another --out folder, or --overwrite to discard the stored results."
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json({**record, "versions": package_versions()}, existing)
    jax.config.update("jax_enable_x64", x64)
    typer.echo(f"gflow: {name} ({scale}) -> {out}", err=True)
    client = _client(executor, scheduler)
    try:
        ds = study.run(
            config,
            str(out / "store"),
            progress=True,
            overwrite=overwrite,
            executor=client if client is not None else "local",
            devices=devices,
        )
    except ValueError as e:
        _fail(str(e))
    finally:
        if client is not None:
            client.close()
    write_atomic(ds, out / f"{name}.nc")
    paths = study.report(ds, str(out))
    typer.echo(Path(paths[-1]).read_text() if paths[-1].endswith(".md") else "")
    typer.echo("Wrote " + ", ".join([str(out / f"{name}.nc"), *paths]))


@app.command("list")
def list_studies():
    """List the registered studies, one line each."""
    for name in STUDIES:
        typer.echo(f"{name:18s} {load(name).DESCRIPTION}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="the study (see `gflow list`)")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML file of settings"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="key=value (TOML value), repeatable; applied after --config"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="run folder (default results/NAME)")
    ] = None,
    scale: Annotated[
        str, typer.Option("--scale", help="preset: tiny (seconds), laptop (minutes), paper")
    ] = "laptop",
    float32: Annotated[
        bool, typer.Option("--float32", help="float32 instead of the default float64")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="discard a stored run with another config")
    ] = False,
    executor: Annotated[
        str, typer.Option("--executor", help="local, or dask (pieces as tasks on workers)")
    ] = "local",
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Dask scheduler address (default: a local cluster)"),
    ] = None,
    devices: DevicesOption = None,
):
    """Run a study: its preset for --scale, then --config, then every --set.

    Finished pieces are stored at once in OUT/store; after a kill, `gflow resume OUT`
    (or the same `gflow run`) continues where it stopped. Writes OUT/NAME.nc and the
    report OUT/NAME.png, .pdf and .md.
    """
    if name not in STUDIES:
        _fail(f"unknown study {name!r}; the studies are: {', '.join(STUDIES)}.")
    if scale not in SCALES:
        _fail(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}.")
    study = load(name)
    try:
        updates = load_toml(config) if config is not None else {}
        updates.update(parse_assignments(set_ or []))
        preset = study.PRESETS[scale]
        cfg = build_config(type(preset), preset, updates)
    except ConfigError as e:
        _fail(str(e))
    out = out or Path("results") / name
    try:
        resolve_devices(devices)  # a bad spec fails here, before any work
    except ConfigError as e:
        _fail(str(e))
    _execute(name, cfg, scale, out, not float32, overwrite, executor, scheduler, devices)


@app.command()
def resume(
    out: Annotated[Path, typer.Argument(help="a run folder of `gflow run`")],
    executor: Annotated[str, typer.Option("--executor", help="local or dask")] = "local",
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="Dask scheduler address")
    ] = None,
    devices: DevicesOption = None,
):
    """Finish a killed run with the configuration it was started with."""
    record = _read_run(out)
    study = load(record["study"])
    preset = study.PRESETS[record["scale"]]
    try:
        cfg = build_config(type(preset), type(preset)(), record["config"])
    except ConfigError as e:
        _fail(f"{out / RUN_FILE}: {e}")
    x64 = record.get("x64", True)
    try:
        resolve_devices(devices)
    except ConfigError as e:
        _fail(str(e))
    _execute(record["study"], cfg, record["scale"], out, x64, False, executor, scheduler, devices)


@app.command()
def report(
    out: Annotated[Path, typer.Argument(help="a finished run folder")],
    to: Annotated[
        Path | None, typer.Option("--to", help="write the report here (default: OUT)")
    ] = None,
):
    """Redraw the figures (PNG, PDF) and the Markdown table from a run's stored dataset."""
    import xarray as xr

    record = _read_run(out)
    name = record["study"]
    path = out / f"{name}.nc"
    if not path.exists():
        _fail(f"{path} does not exist: the run is not finished (`gflow resume {out}`).")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    paths = load(name).report(ds, str(to or out))
    typer.echo("Wrote " + ", ".join(paths))


@app.command()
def info(out: Annotated[Path, typer.Argument(help="a run folder")]):
    """Show a run's study, configuration, package versions and progress."""
    from .sweep import sweep_info

    record = _read_run(out)
    typer.echo(f"study:   {record['study']} (scale {record['scale']}, "
               f"{'float64' if record.get('x64', True) else 'float32'})")  # fmt: skip
    typer.echo("config:")
    for key, value in record["config"].items():
        typer.echo(f"  {key} = {json.dumps(value)}")
    typer.echo("versions: " + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items()))
    store = out / "store"
    try:
        status = sweep_info(store)
    except FileNotFoundError:
        typer.echo("progress: no sweep store yet" if not store.exists() else
                   "progress: stored without a sweep manifest")  # fmt: skip
    else:
        typer.echo(
            f"progress: cells {status.cells_done}/{status.cells_total} done, "
            f"pieces {len(status.done)}/{len(status.done) + len(status.left)} done"
            + (f", {len(status.stale)} stale temporary file(s)" if status.stale else "")
        )
        for settings, members in status.left[:10]:
            span = "" if members is None else f" members {members[0]}-{members[1] - 1}"
            typer.echo(f"  left: {settings}{span}")
    finished = out / f"{record['study']}.nc"
    typer.echo(f"dataset: {finished if finished.exists() else 'not written yet'}")


def main():  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
