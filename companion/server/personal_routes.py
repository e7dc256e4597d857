"""HTTP routes for memories, personas and a user's data: parse, call, format."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from companion.errors import InputError, NotFound
from companion.memory.service import MemoryService
from companion.persona.avatars import avatar, with_avatars
from companion.persona.card import to_card, write_png_card
from companion.persona.model import persona_from
from companion.persona.prompt import system_prompt
from companion.personal import Personal
from companion.server.schemas import (
    ID_PATTERN,
    INT64_MAX,
    INT64_MIN,
    MemoryCreate,
    MemoryEdit,
    PersonaBody,
    PersonaSelect,
)
from companion.server.security import principal_of
from companion.userdata import delete_user, export_user

router = APIRouter()
USER = "/api/v1/users/{user_id}"
MAX_CARD_BYTES = 4 << 20
MemoryId = Annotated[int, Path(ge=INT64_MIN, le=INT64_MAX)]  # SQLite's integers: 422 beyond
Offset = Annotated[int, Query(ge=INT64_MIN, le=INT64_MAX)]


def _personal(request: Request) -> Personal:
    """The runtime's personal side."""
    personal = request.app.state.runtime.companion.personal
    if not isinstance(personal, Personal):
        raise NotFound("memory and personas are not enabled in this runtime")
    return personal


def _memory(request: Request) -> MemoryService:
    """The memory service (404 when memory_enabled is off)."""
    memory = _personal(request).memory
    if memory is None:
        raise NotFound("long-term memory is off (memory_enabled = false)")
    return memory


def _user(user_id: str) -> str:
    """A user id as the chat route accepts it."""
    if not re.match(ID_PATTERN, user_id):
        raise InputError("user_id must be 1-64 of A-Z a-z 0-9 _ . : @ -", field="user_id")
    return user_id


@router.get(USER + "/memories", tags=["memory"])
async def list_memories(user_id: str, request: Request, limit: int = 50, offset: Offset = 0,
                        topic: str | None = None) -> dict[str, Any]:
    """A user's memories, most important first (or one topic's)."""
    memory = _memory(request)
    found = await asyncio.to_thread(memory.memories, _user(user_id), max(1, min(limit, 1000)),
                                    max(0, offset), topic)
    return {"user_id": user_id, "memories": [m.to_dict() for m in found]}


@router.get(USER + "/memories/search", tags=["memory"])
async def search_memories(user_id: str, q: str, request: Request, k: int = 5,
                          as_of: datetime | None = None) -> dict[str, Any]:
    """What recall would choose for `q` (facts and turns), each with its score and reasons;
    `as_of` (ISO time): only what was said up to then, facts as they stood then."""
    memory = _memory(request)
    when = None if as_of is None else as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    found = await asyncio.to_thread(lambda: memory.recall(
        _user(user_id), q, None, max(1, min(k, 50)), as_of=when))
    return {"user_id": user_id, "query": q, "memories": [r.to_dict() for r in found]}


@router.get(USER + "/episodes", tags=["memory"])
async def list_episodes(user_id: str, request: Request, limit: int = 50, offset: Offset = 0,
                        session_id: str | None = None) -> dict[str, Any]:
    """The user's turns as kept (episodic memory), newest first; optionally one session's."""
    memory = _memory(request)
    found = await asyncio.to_thread(memory.episodes, _user(user_id), max(1, min(limit, 1000)),
                                    max(0, offset), session_id)
    return {"user_id": user_id, "episodes": [e.to_dict() for e in found]}


@router.post(USER + "/memories", status_code=201, tags=["memory"])
async def add_memory(user_id: str, body: MemoryCreate, request: Request) -> dict[str, Any]:
    """Store a memory as given."""
    memory = _memory(request)
    made = await asyncio.to_thread(memory.add, _user(user_id), body.text,
                                   importance=body.importance, topics=body.topics)
    return dict(made.to_dict())


@router.patch(USER + "/memories/{memory_id}", tags=["memory"])
async def edit_memory(user_id: str, memory_id: MemoryId, body: MemoryEdit,
                      request: Request) -> dict[str, Any]:
    """Change a memory's text, importance or topics (at least one)."""
    if body.text is None and body.importance is None and body.topics is None:
        raise InputError("nothing to change: give text, importance or topics", field="body")
    memory = _memory(request)
    changed = await asyncio.to_thread(memory.edit, _user(user_id), memory_id, text=body.text,
                                      importance=body.importance, topics=body.topics)
    return dict(changed.to_dict())


@router.delete(USER + "/memories/{memory_id}", status_code=204, tags=["memory"])
async def delete_memory(user_id: str, memory_id: MemoryId, request: Request) -> Response:
    """Delete one memory."""
    await asyncio.to_thread(_memory(request).delete, _user(user_id), memory_id)
    return Response(status_code=204)


@router.get(USER + "/memories/history", tags=["memory"])
async def memory_history(user_id: str, request: Request,
                         memory_id: Annotated[int | None, Query(ge=INT64_MIN, le=INT64_MAX)]
                         = None) -> dict[str, Any]:
    """Every ADD / UPDATE / DELETE / NONE of a user's memories."""
    rows = await asyncio.to_thread(_memory(request).history, _user(user_id), memory_id)
    return {"user_id": user_id, "history": rows}


@router.post("/api/v1/memories/cleanup", tags=["memory"])
async def cleanup(request: Request, user_id: str | None = None) -> dict[str, int]:
    """Run the cleanup policy now (one user or all) (admin)."""
    report = await asyncio.to_thread(_memory(request).cleanup, user_id)
    return report.to_dict()


@router.get(USER + "/export", tags=["users"])
async def export(user_id: str, request: Request) -> dict[str, Any]:
    """Everything stored about a user, as JSON."""
    rt = request.app.state.runtime
    return await asyncio.to_thread(export_user, rt.store, _personal(request), _user(user_id))


@router.delete(USER, tags=["users"])
async def forget_user(user_id: str, request: Request) -> dict[str, Any]:
    """Delete everything stored about a user: sessions, messages, memories, cache entries."""
    rt = request.app.state.runtime
    cache = rt.companion.cache
    # the cache's rows and in-process entries their words reached, in every scope
    cached = await asyncio.to_thread(cache.forget_user, _user(user_id)) if cache else 0
    counts = await asyncio.to_thread(delete_user, rt.store, _personal(request), user_id)
    counts["cache_entries"] += cached
    return {"user_id": user_id, "deleted": True, **counts}


# personas


def _private_to(request: Request) -> str | None:
    """Who a new persona belongs to: nobody (shared) when an admin makes it, else the caller."""
    principal = principal_of(request)
    return None if principal.admin else principal.user_id


@router.get("/api/v1/personas", tags=["persona"])
async def list_personas(request: Request) -> dict[str, Any]:
    """The personas the caller may select: the default, the shared ones and their own private
    ones (an admin sees every persona)."""
    found = await asyncio.to_thread(_personal(request).personas.all, _private_to(request))
    pictured = await asyncio.to_thread(with_avatars, request.app.state.runtime.store)
    return {"personas": [{**p.to_dict(), "avatar": p.id in pictured} for p in found]}


@router.post("/api/v1/personas", status_code=201, tags=["persona"])
async def create_persona(body: PersonaBody, request: Request) -> dict[str, Any]:
    """Create a persona: shared when an admin creates it, else private to the caller."""
    made = await asyncio.to_thread(_personal(request).personas.create,
                                   persona_from(body.fields()), _private_to(request))
    return made.to_dict()


@router.post("/api/v1/personas/import", status_code=201, tags=["persona"])
async def import_persona(request: Request, id: str | None = None,
                         on_conflict: Literal["refuse", "overwrite", "rename"] = "refuse"
                         ) -> dict[str, Any]:
    """Create a persona from a Character Card V2 (request body: the JSON or the PNG file; a
    PNG's image becomes the avatar), shared or private as POST /api/v1/personas. A taken id:
    `on_conflict` refuse (422), overwrite (only a persona the caller may change), rename."""
    raw = await request.body()
    if len(raw) > MAX_CARD_BYTES:
        raise InputError("card file is over 4 MiB", field="card")
    made = await asyncio.to_thread(_personal(request).personas.import_card, raw, id, on_conflict,
                                   _private_to(request))
    return made.to_dict()


@router.get("/api/v1/personas/{persona_id}/avatar", tags=["persona"])
async def persona_avatar(persona_id: str, request: Request) -> Response:
    """The persona's avatar (the image of its PNG card); 404 when it has none."""
    png = await asyncio.to_thread(avatar, request.app.state.runtime.store, persona_id)
    if png is None:
        raise NotFound(f"persona {persona_id!r} has no avatar", field="persona_id")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/api/v1/personas/{persona_id}", tags=["persona"])
async def get_persona(persona_id: str, request: Request) -> dict[str, Any]:
    """One persona and the system prompt it writes."""
    persona = await asyncio.to_thread(_personal(request).personas.get, persona_id)
    return {**persona.to_dict(), "rendered_prompt": system_prompt(persona)}


@router.patch("/api/v1/personas/{persona_id}", tags=["persona"])
async def edit_persona(persona_id: str, body: PersonaBody, request: Request) -> dict[str, Any]:
    """Change a persona (traits merge with the ones it has)."""
    changed = await asyncio.to_thread(_personal(request).personas.update, persona_id,
                                      body.fields())
    request.app.state.runtime.shared.bus.publish("persona_edited", persona_id=persona_id)
    return changed.to_dict()


@router.delete("/api/v1/personas/{persona_id}", status_code=204, tags=["persona"])
async def delete_persona(persona_id: str, request: Request) -> Response:
    """Delete a persona; its users go back to the default."""
    await asyncio.to_thread(_personal(request).personas.delete, persona_id)
    request.app.state.runtime.shared.bus.publish("persona_edited", persona_id=persona_id)
    return Response(status_code=204)


@router.get("/api/v1/personas/{persona_id}/card", tags=["persona"])
async def export_card(persona_id: str, request: Request, format: str = "json") -> Response:
    """The persona as a Character Card V2: `format=json` or `format=png` (a `chara` chunk)."""
    persona = await asyncio.to_thread(_personal(request).personas.get, persona_id)
    card = to_card(persona)
    if format == "png":
        image = await asyncio.to_thread(avatar, request.app.state.runtime.store, persona_id)
        return Response(write_png_card(card, image), media_type="image/png")
    if format != "json":
        raise InputError("format must be json or png", field="format")
    return Response(json.dumps(card, ensure_ascii=False), media_type="application/json")


@router.get(USER + "/persona", tags=["persona"])
async def user_persona(user_id: str, request: Request) -> dict[str, Any]:
    """The persona a user talks to and their relationship."""
    persona, rel = await asyncio.to_thread(_personal(request).personas.active, _user(user_id))
    return {"persona": persona.to_dict(), "relationship": rel.to_dict()}


@router.put(USER + "/persona", tags=["persona"])
async def select_persona(user_id: str, body: PersonaSelect, request: Request) -> dict[str, Any]:
    """Choose the persona a user talks to."""
    rel = await asyncio.to_thread(_personal(request).personas.select, _user(user_id),
                                  body.persona_id)
    return {"persona_id": body.persona_id, "relationship": rel.to_dict()}
