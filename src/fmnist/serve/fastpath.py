"""The Open Inference Protocol's hot route, POST /v2/models/{name}/infer, answered as plain ASGI:
FastAPI's routing, parameter resolution and Request object cost more than the parsing and the model
for a one-image request (a profile under load: a fifth of the time). The route stays declared in
FastAPI (serve/oip.py) for the API docs and answers through the same `infer_answer`; this layer
sits inside the body limit and the metrics, so both apply to it unchanged. Request policy belongs
in ASGI middleware outside it (as those two are); a dependency declared on the route or the app
(authentication, say) makes this layer step aside, so the route answers and the dependency applies.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from fmnist.serve.oip import infer_answer

PREFIX, SUFFIX = "/v2/models/", "/infer"


class InferFastPath:
    def __init__(self, app, route, router):
        self.app, self.route, self.router = app, route, router  # the declared route, its router
        self.aside: bool | None = None  # whether a dependency applies to it, found on the first request

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(PREFIX)
            or not path.endswith(SUFFIX)
            or "/" in (name := path[len(PREFIX) : -len(SUFFIX)])
            or not name
            or self.steps_aside(scope["app"])
        ):
            return await self.app(scope, receive, send)
        scope["route"] = self.route  # its path template labels the metrics
        state = scope["app"].state  # the FastAPI app's (Starlette puts itself in the scope)
        chunks = []
        while True:  # the body limit (outside) raises past its limit, which answers 413
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunks.append(event.get("body", b""))
            if not event.get("more_body", False):
                break
        header = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header = value.decode("latin-1")
        try:
            content, headers = await infer_answer(state, name, b"".join(chunks), header)
            status = 200
        except HTTPException as e:  # as the app's handler answers it: the JSON error, its headers (Retry-After)
            content, status = json.dumps({"error": str(e.detail)}).encode(), e.status_code
            headers = {"content-type": "application/json", **(e.headers or {})}
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    def steps_aside(self, app) -> bool:
        """Whether FastAPI would run something for /infer that this layer would not: a dependency of
        the route (its own or its router's), of the app, or given where the app includes the router."""
        if self.aside is None:
            found = [*self.route.dependant.dependencies, *app.router.dependencies]
            for r in app.router.routes:  # FastAPI keeps each included router with its include's options
                if getattr(r, "original_router", None) is self.router:
                    found += getattr(r.include_context, "dependencies", None) or []
            self.aside = bool(found)
        return self.aside
