"""SessionManager deployment: one replica running the session pool (cap, warm actors, cleanup,
resume). It holds no state of its own: restarted, it takes over the live session actors."""
from __future__ import annotations

from typing import Any

from ray import serve

from actors.pool import SessionPool
from actors.turn_controller import StageHandles
from serve_app.config import Profile, check_character_voices, check_realtime, load_characters


@serve.deployment(name="SessionManager", num_replicas=1)
class SessionManager:
    async def __init__(self, profile: Profile, tts: Any, lipsync: Any, asr: Any | None, llm: Any | None) -> None:
        """`asr` and `llm`: None with the realtime conversation backend."""
        stages = StageHandles(tts=tts, lipsync=lipsync, asr=asr, llm=llm)
        characters = load_characters(profile.characters_dir)
        self._voices: list[dict] = await tts.voices.remote()
        check_character_voices(characters, [v["id"] for v in self._voices], profile.characters_dir)
        if profile.conversation.backend == "realtime":
            realtime = profile.conversation.realtime
            check_realtime(realtime, characters)
            # The server's voices are what a session speaks with; TTS only says apologies.
            names = dict.fromkeys([realtime.voice] + [c.realtime_voice for c in characters.values() if c.realtime_voice])
            self._voices = [{"id": name, "language": None, "backend": "realtime", "engine": "realtime",
                             "default": name == realtime.voice, "fallback": False} for name in names]
        # Sessions are told apart by the app that started them: several apps share a cluster.
        self.pool = SessionPool(profile, characters, stages, owner=serve.get_replica_context().app_name)
        await self.pool.start()

    def voices(self) -> list[dict]:
        """Every voice the TTS engines offer (fixed at start, like the engines)."""
        return self._voices

    async def create(self, avatar: str | None, character: str | None, client: str | None = None,
                     stream: bool = False) -> dict:
        return await self.pool.create(avatar, character, client, stream)

    async def delete(self, session_id: str, token: str | None) -> None:
        await self.pool.delete(session_id, token)

    async def resume(self, session_id: str, token: str | None) -> None:
        await self.pool.resume(session_id, token)

    async def summary(self) -> dict:
        """Counts only: /api/health calls this, and it must stay cheap (no call per session)."""
        return {"active": self.pool.count(), "warm": self.pool.warm_count(), "admission": self.pool.admission(),
                "capacity": await self.pool.capacity()}

    async def sessions_using(self, avatar_id: str) -> int:
        return await self.pool.sessions_using(avatar_id)

    async def __del__(self) -> None:
        await self.pool.shutdown()
