"""The query + management HTTP app on Fusion's main port: a thin adapter over FusionState.

Every parameter is validated before anything happens (400 with a clear message); view keys and
management access are checked per request (401/403); readiness gives 503 + Retry-After.
"""

from __future__ import annotations

from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from fustor.errors import NotFoundError, ProtocolError
from fustor.protocol import KEY_HEADER
from fustor_fusion.httputil import (
    arg_bool,
    arg_int,
    arg_path,
    arg_str,
    big_json_response,
    encode_json,
    install_error_handlers,
    json_response,
    json_text_response,
)
from fustor_fusion.state import FusionState
from fustor_fusion.view import View
from fustor_fusion.walk import walk_listings

V = "/api/v1/views/<view_id>"
BIG_LIMIT = 5000      # answers that may hold more entries are encoded in a worker thread
M = "/api/v1/management"


def _key() -> str | None:
    return request.headers.get(KEY_HEADER) or None


async def _small_json(body: Any) -> Response:
    return json_response(body)


def create_app(state: FusionState) -> QuartTrio:
    app = QuartTrio("fustor-fusion")
    install_error_handlers(app)

    def view_for(view_id: str) -> View:
        return state.check_view_access(view_id, _key(), request.remote_addr)

    def management() -> None:
        state.check_management(_key(), request.remote_addr)

    @app.get("/api/v1/health")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get(f"{V}/tree")
    async def tree(view_id: str) -> Response:
        view = view_for(view_id)
        path = arg_path()
        recursive = arg_bool("recursive", True)
        max_depth = arg_int("max_depth", None, lo=0)
        only_path = arg_bool("only_path", False)
        limit = arg_int("limit", None, lo=0)
        cursor = arg_str("cursor")
        allow_partial = arg_bool("allow_partial", False)
        force = arg_bool("force_real_time", False)
        body: dict[str, Any] = {"view": view.id, "path": path}

        if force:
            # A realtime find is the way out of "not ready" too (the guide's troubleshooting),
            # so it answers whatever the readiness, with what the view knows so far. The job
            # starts only once the answer is known to be valid (a 400 must start nothing).
            meta = state.meta(view, allow_partial=True)
            try:
                entry, next_cursor = view.tree(path, recursive=recursive, max_depth=max_depth,
                                               only_path=only_path, limit=limit, cursor=cursor)
            except NotFoundError:
                entry, next_cursor = None, None
            body["job_id"] = state.start_find(view, path, recursive)
            body["find_pending"] = True
        else:
            meta = state.meta(view, allow_partial=allow_partial)
            if not recursive and max_depth != 0 and not only_path:
                # the common listing, its children encoded straight from the tree (~2x faster)
                got = view.listing_json(path, limit=limit, cursor=cursor, max_children=BIG_LIMIT)
                if got is not None:
                    return json_text_response(
                        f'{{"view":{encode_json(view.id)},"path":{encode_json(path)},"entry":{got[0]},'
                        f'"next_cursor":{encode_json(got[1])},"meta":{encode_json(meta)}}}')
            entry, next_cursor = view.tree(path, recursive=recursive, max_depth=max_depth,
                                           only_path=only_path, limit=limit, cursor=cursor)
        body["entry"] = entry
        body["next_cursor"] = next_cursor
        body["meta"] = meta
        if recursive and (max_depth is None or max_depth > 1) or (limit or 0) > BIG_LIMIT:
            return await big_json_response(body)
        return json_response(body)

    @app.get(f"{V}/metadata")
    async def metadata(view_id: str) -> Response:
        view = view_for(view_id)
        path = arg_path()
        meta = state.meta(view, allow_partial=arg_bool("allow_partial", False))
        entry = view.node(path)
        if entry is None:
            raise NotFoundError(f"no entry {path!r} in view {view.id!r}", path=path)
        return json_response({"view": view.id, "path": path, "entry": entry, "meta": meta})

    @app.get(f"{V}/walk")
    async def walk(view_id: str) -> Response:
        view = view_for(view_id)
        path = arg_path()
        start = arg_path("from", path)
        max_entries = arg_int("max_entries", 5000, lo=1)
        assert max_entries is not None
        meta = state.meta(view, allow_partial=arg_bool("allow_partial", False))
        listings, nxt = walk_listings(view, path, start, max_entries=max_entries)
        reply = big_json_response if max_entries > BIG_LIMIT else _small_json
        return await reply({"view": view.id, "path": path, "from": start,
                            "listings": listings, "next": nxt, "meta": meta})

    @app.get(f"{V}/search")
    async def search(view_id: str) -> Response:
        view = view_for(view_id)
        pattern = arg_str("pattern")
        if not pattern:
            raise ProtocolError("pattern: required (a glob such as *.dat or upload/**/data_*.dat)",
                                param="pattern")
        path = arg_path()
        limit = arg_int("limit", 1000, lo=1)
        assert limit is not None
        meta = state.meta(view, allow_partial=arg_bool("allow_partial", False))
        matches, truncated = view.search(pattern, path=path, limit=limit)
        reply = big_json_response if limit > BIG_LIMIT else _small_json
        return await reply({"view": view.id, "path": path, "pattern": pattern,
                              "matches": matches, "truncated": truncated, "meta": meta})

    @app.get(f"{V}/stats")
    async def stats(view_id: str) -> Response:
        view = view_for(view_id)
        meta = state.meta(view, allow_partial=True)
        body = dict(view.stats())
        pipes: dict[str, Any] = dict(body.get("pipes") or {})
        for pid, pm in meta["pipes"].items():
            rt = state.pipes[pid]
            info = dict(pipes.get(pid) or {})
            info.update(pm)
            info["sessions"] = len(state.sessions.sessions_of(pid))
            info["events_applied"] = rt.events_applied
            info["batches"] = rt.batches
            info["duplicate_batches"] = rt.duplicates
            info["ingest_lag_sec"] = round(rt.ingest_lag_sec, 4)
            info["last_batch_at"] = rt.last_batch_at
            info["last_seen"] = rt.last_seen
            pipes[pid] = info
        body["pipes"] = pipes
        body.setdefault("logical_clock", meta["logical_clock"])
        body["view"] = view.id
        body["meta"] = meta
        return json_response(body)

    @app.get(f"{V}/blind-spots")
    async def blind_spots(view_id: str) -> Response:
        view = view_for(view_id)
        meta = state.meta(view, allow_partial=True)
        spots: dict[str, Any] = dict(view.blind_spots())
        spots["meta"] = meta
        # up to BLIND_SPOT_CAP marks per list and pipe: encode big answers off the event loop
        big = len(spots["additions"]) + len(spots["deletions"]) > BIG_LIMIT
        return await (big_json_response if big else _small_json)(spots)

    @app.get(f"{V}/suspects")
    async def suspects(view_id: str) -> Response:
        view = view_for(view_id)
        meta = state.meta(view, allow_partial=True)
        sus = view.suspects()
        reply = big_json_response if len(sus) > BIG_LIMIT else _small_json
        return await reply({"suspects": sus, "meta": meta})

    @app.get(f"{V}/sessions")
    async def view_sessions(view_id: str) -> Response:
        view = view_for(view_id)
        meta = state.meta(view, allow_partial=True)
        return json_response({"sessions": state.sessions.to_json(state.pipe_ids_of(view)),
                              "meta": meta})

    @app.get(f"{V}/jobs/<job_id>")
    async def view_job(view_id: str, job_id: str) -> Response:
        view = view_for(view_id)
        job = state.jobs.get(job_id)
        if job.view != view.id:
            raise NotFoundError(f"no job {job_id!r} in view {view.id!r}", job_id=job_id)
        return json_response(state.job_json(job))

    # ------------------------------------------------------------------ management
    @app.get(f"{M}/jobs")
    async def jobs() -> Response:
        management()
        view = arg_str("view")
        return json_response({"jobs": [state.job_json(j) for j in state.jobs.list(view)]})

    @app.get(f"{M}/jobs/<job_id>")
    async def job(job_id: str) -> Response:
        management()
        return json_response(state.job_json(state.jobs.get(job_id)))

    @app.get(f"{M}/views")
    async def views() -> Response:
        management()
        out = []
        for vid, view in state.views.items():
            pipes = {pid: state.pipe_state(view, pid)
                     for pid in state.pipe_ids_of(view)}
            out.append({"id": vid, "driver": view.config.driver, "pipes": pipes,
                        "ready": all(p["state"] in ("ready", "stale") for p in pipes.values())})
        return json_response({"views": out})

    @app.get(f"{M}/pipes")
    async def pipes() -> Response:
        management()
        out = []
        for pid, rt in state.pipes.items():
            leader = state.sessions.leader_of(pid)
            out.append({
                "id": pid, "receiver": rt.config.receiver, "views": list(rt.config.views),
                "leader": leader.agent_id if leader else None,
                "sessions": len(state.sessions.sessions_of(pid)),
                "events_applied": rt.events_applied, "batches": rt.batches,
                "duplicate_batches": rt.duplicates, "last_batch_at": rt.last_batch_at,
                "last_seen": rt.last_seen,
                "ingest_lag_sec": round(rt.ingest_lag_sec, 4),
                "session_timeout_seconds": state.config.pipe_timeout(pid),
            })
        return json_response({"pipes": out})

    @app.get(f"{M}/sessions")
    async def sessions() -> Response:
        management()
        return json_response({"sessions": state.sessions.to_json()})

    return app
