"""The page's runs view: every run under the server's run folders (as `fmnist runs` lists them),
with its validation curve, and serving one of them on request."""

from __future__ import annotations

from pathlib import Path

import anyio
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError

from fmnist.errors import FmnistError
from fmnist.inference.predictor import load_predictor
from fmnist.run.query import describe, find_runs, select, shown
from fmnist.serve.models import resolved, warmed
from fmnist.serve.schemas import ERRORS

router = APIRouter(prefix="/runs")


class ServeRequest(BaseModel):
    run: str = Field(description="a run folder as GET /runs lists it")


def listed(request: Request) -> dict[str, object]:
    roots = [Path(r) for r in request.app.state.settings.runs_roots if Path(r).is_dir()]
    return {str(run.path): run for run in find_runs(roots)}


def table(found: dict, served: dict[str, str]) -> list[dict]:
    """`fmnist runs`' rows, each with its validation curve and whether it is or can be served."""
    rows = []
    for run in found.values():
        row = describe(run)
        row["curve"] = [[h["epoch"], h["val_accuracy"]] for h in run.history_so_far()]
        row["servable"] = run.has_checkpoint()
        row["served_as"] = served.get(resolved(run.path))
        rows.append(row)
    return [shown(r) for r in select(rows, [], "val_accuracy")]


@router.get("", summary="the runs under the server's run folders, with their validation curves")
async def runs(request: Request):
    state = request.app.state
    served = {resolved(p.source): name for name, p in state.models.all().items()}
    rows = await anyio.to_thread.run_sync(lambda: table(listed(request), served), limiter=state.runs_limiter)
    return {"runs": rows}


@router.post(
    "/serve",
    responses={**ERRORS, 409: ERRORS[400]},
    summary="serve a listed run beside the others",
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": ServeRequest.model_json_schema()}}}},
)
async def serve_run(request: Request):
    state = request.app.state
    if state.settings.processes > 1:
        raise HTTPException(409, "serving another run needs a server of one process (fmnist serve --processes 1)")
    body = serve_request(await request.body())  # read here, so the body limit's 413 reaches the client
    run = (await anyio.to_thread.run_sync(listed, request, limiter=state.runs_limiter)).get(body.run)
    if run is None or not run.has_checkpoint():
        raise HTTPException(404, f"no tested run {body.run!r} among the listed runs")
    load = lambda: warmed(load_predictor(run.path))  # noqa: E731
    try:
        name = await state.models.load_once(run.path, load, state.runs_limiter, state.settings.max_models)
    except FmnistError as e:  # a listed run whose files cannot be served (a damaged checkpoint, say)
        raise HTTPException(422, f"cannot serve {body.run}: {e}") from None
    return {"name": name}


def serve_request(body: bytes) -> ServeRequest:
    try:
        return ServeRequest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        status = 400 if first.get("type") == "json_invalid" else 422
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise HTTPException(status, f"{where}: {first.get('msg')}".lstrip(": ")) from None
