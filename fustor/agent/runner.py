"""`run_agent(config)`: one task group per configured pipe, hubs shared per source, reload.

`task_status.started(handle)`; the handle reloads a new config (pipes whose source or sender
changed are restarted, others keep running), reports status and stops gracefully (sessions
are closed so a follower is promoted at once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from fustor.agent.pipe import Pipe
from fustor.agent.sender import FusionClient
from fustor.agent.source import SourceHub, hub_key
from fustor.config import AgentConfig, SenderConfig, SourceConfig

log = logging.getLogger(__name__)


@dataclass
class _Task:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)

    async def stop(self) -> None:
        self.scope.cancel()
        await self.done.wait()


@dataclass
class _PipeRun:
    pipe: Pipe
    task: _Task
    source: SourceConfig
    sender: SenderConfig


class AgentHandle:
    def __init__(self, agent: _Agent) -> None:
        self._agent = agent

    async def reload(self, config: AgentConfig) -> None:
        await self._agent.apply(config)

    def status(self) -> dict[str, Any]:
        return self._agent.status()

    def stop(self) -> None:
        self._agent.stopping.set()

    @property
    def pipes(self) -> dict[str, Pipe]:
        return {pid: r.pipe for pid, r in self._agent.pipes.items()}


class _Agent:
    def __init__(self, nursery: trio.Nursery, config: AgentConfig,
                 watch_limit: int | None) -> None:
        self.nursery = nursery
        self.config = config
        self.watch_limit = watch_limit
        self.hubs: dict[tuple[object, ...], tuple[SourceHub, _Task]] = {}
        self.clients: dict[SenderConfig, FusionClient] = {}
        self.pipes: dict[str, _PipeRun] = {}
        self.stopping = trio.Event()
        self._lock = trio.Lock()

    def status(self) -> dict[str, Any]:
        return {"agent_id": self.config.agent_id,
                "pipes": {pid: r.pipe.status() for pid, r in self.pipes.items()}}

    async def apply(self, config: AgentConfig) -> None:
        async with self._lock:
            self.config = config
            for pid, run in list(self.pipes.items()):
                pc = config.pipes.get(pid)
                if (pc is None or config.sources[pc.source] != run.source
                        or config.senders[pc.sender] != run.sender
                        or config.agent_id != run.pipe.agent_id
                        or config.buffer_events != run.pipe.buffer.capacity):
                    log.info("pipe %s: %s", pid, "removed" if pc is None else "changed: restarting")
                    await run.task.stop()
                    del self.pipes[pid]
            for pid, pc in config.pipes.items():
                if pid in self.pipes:
                    continue
                source = config.sources[pc.source]
                sender = config.senders[pc.sender]
                hub = await self._hub(source)
                client = self.clients.get(sender)
                if client is None:
                    client = self.clients[sender] = FusionClient(sender)
                pipe = Pipe(pc, config, hub, client)
                task = _Task()
                await self.nursery.start(self._run_pipe, pipe, task)
                self.pipes[pid] = _PipeRun(pipe, task, source, sender)
            await self._prune()

    async def _hub(self, source: SourceConfig) -> SourceHub:
        key = hub_key(source)
        if key not in self.hubs:
            hub = SourceHub(source, watch_limit=self.watch_limit)
            task = _Task()
            await self.nursery.start(self._run_hub, hub, task)
            self.hubs[key] = (hub, task)
        return self.hubs[key][0]

    async def _prune(self) -> None:
        used_hubs = {hub_key(r.source) for r in self.pipes.values()}
        for key, (_hub, task) in list(self.hubs.items()):
            if key not in used_hubs:
                await task.stop()
                del self.hubs[key]
        used = {r.sender for r in self.pipes.values()}
        for sender, client in list(self.clients.items()):
            if sender not in used:
                del self.clients[sender]
                await client.aclose()

    async def _run_pipe(self, pipe: Pipe, task: _Task,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with task.scope:
                await pipe.run(task_status=task_status)
        finally:
            task.done.set()

    async def _run_hub(self, hub: SourceHub, task: _Task,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with task.scope:
                await hub.run(task_status=task_status)
        finally:
            task.done.set()

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            for run in list(self.pipes.values()):
                run.task.scope.cancel()
            with trio.move_on_after(5):
                for run in list(self.pipes.values()):
                    await run.task.done.wait()
            for client in self.clients.values():
                await client.aclose()


async def run_agent(config: AgentConfig, *, watch_limit: int | None = None,
                    task_status: trio.TaskStatus[AgentHandle] = trio.TASK_STATUS_IGNORED) -> None:
    """Run every pipe of `config` until cancelled or stopped through the handle."""
    if not config.pipes:
        log.warning("agent %s: no pipes configured; nothing to do", config.agent_id)
    async with trio.open_nursery() as nursery:
        agent = _Agent(nursery, config, watch_limit)
        try:
            await agent.apply(config)
            log.info("agent %s: %d pipe(s) running", config.agent_id, len(agent.pipes))
            task_status.started(AgentHandle(agent))
            await agent.stopping.wait()
            log.info("agent %s: stopping", config.agent_id)
        finally:
            await agent.close()
            nursery.cancel_scope.cancel()
