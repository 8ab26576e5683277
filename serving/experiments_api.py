"""Admin endpoints for experiments: list, create or replace (before its start), stop.

Why admin only: an experiment decides which ranking real customers get, so only the holder of
OFFERS_ADMIN_TOKEN changes it (API tokens rank, they do not configure). A change is stored
under OFFERS_HOME (serving.experiments) and reaches every worker as a reload does: this worker
reloads now, the others within OFFERS_RELOAD_WATCH_S.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from serving.auth import ADMIN_TOKEN
from serving.experiments import (
    ExperimentError,
    load_experiments,
    parse_experiment,
    save_experiment,
    stop_experiment,
)
from serving.scorer import Scorer


def list_experiments(request: Request) -> JSONResponse:
    scorer: Scorer = request.app.state.scorer
    return JSONResponse({"experiments": [e.to_dict() for e in load_experiments(scorer.home)]})


def put_experiment(name: str, request: Request, body: dict[str, Any] = Body(...)) -> JSONResponse:
    """The body is the definition without its name (the path names it)."""
    scorer: Scorer = request.app.state.scorer
    if "name" in body and body["name"] != name:
        return JSONResponse({"detail": f"body names {body['name']!r}, the path {name!r}"}, 422)
    try:
        experiment = parse_experiment({**body, "name": name})
        save_experiment(scorer.home, experiment)
    except ExperimentError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    scorer.request_reload()
    return JSONResponse(experiment.to_dict())


def stop(name: str, request: Request) -> JSONResponse:
    scorer: Scorer = request.app.state.scorer
    try:
        stopped = stop_experiment(scorer.home, name)
    except ExperimentError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    scorer.request_reload()
    return JSONResponse(stopped.to_dict())


def add_experiment_routes(app: FastAPI) -> None:
    tags = ["experiments"]
    admin = [ADMIN_TOKEN]
    app.add_api_route("/v1/experiments", list_experiments, methods=["GET"], tags=tags,
                      dependencies=admin)  # fmt: skip
    app.add_api_route("/v1/experiments/{name}", put_experiment, methods=["PUT"], tags=tags,
                      dependencies=admin)  # fmt: skip
    app.add_api_route("/v1/experiments/{name}/stop", stop, methods=["POST"], tags=tags,
                      dependencies=admin)  # fmt: skip
