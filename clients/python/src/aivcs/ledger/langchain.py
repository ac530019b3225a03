"""Record LangChain and LangGraph invocations as ledger runs: `LedgerCallbackHandler`.

    handler = LedgerCallbackHandler(client, agent_name="planner", graph=app)
    app.invoke(inputs, config={"callbacks": [handler]})
    client.runs.get(handler.run_id)             # COMPLETED, its events in order

Needs the `langchain` extra (`pip install "aivcs-ledger[langchain]"`).

Each top-level invocation (a callback with no parent run, or one whose
parent this handler never saw) becomes one ledger run; everything under it
(graph nodes, chains, chat models and LLMs, tools, retrievers, nested
graphs) becomes its events, in the order the callbacks came, each carrying
LangChain's `lc_run_id` and `lc_parent_run_id` so the tree can be rebuilt.
The run is completed when the invocation returns and failed, with
"ExceptionType: message" as reason, when it raises; an invocation ended by
something that is not an `Exception` (a stream closed early, a cancelled
task, KeyboardInterrupt) is cancelled. A LangGraph interrupt ends the
invocation normally: its run gets an `interrupt` event and is completed;
resuming (`Command(resume=...)`, same `thread_id`) is a new invocation and so
a new run, tagged `resumed: true` and with the same `thread_id` tag.

The handler only queues (see `aivcs.ledger._recorder`): ledger calls happen
on a background thread, so a slow ledger never slows a step. At the end of
a top-level invocation the handler waits for the run to be ended in the
ledger, except in an event loop (`ainvoke`, `astream`), where it must not
block: there `await handler.aflush()` (or `handler.wait(run_id)`) waits.
With `when_full="drop"` it never waits: the run ends in the background.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Unpack
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from aivcs.ledger._client import Client
from aivcs.ledger._jsonable import digest_of, jsonable
from aivcs.ledger._models import JSON, Run
from aivcs.ledger._recorder import Recorder
from aivcs.ledger._session import Ending, ending_for
from aivcs.ledger._settings import WriterOptions, WriterSettings, resolve_settings

__all__ = ["LedgerCallbackHandler", "graph_spec", "graph_spec_digest"]

_KEPT_RUNS = 1024  # ended-run futures kept for wait(); older ones are forgotten


def graph_spec(graph: Any) -> dict[str, JSON]:
    """The structure of a compiled LangGraph graph (or any runnable with `get_graph()`):
    its node names, sorted, and its edges as sorted `[source, target, conditional]`."""
    drawn = graph.get_graph()
    nodes: list[JSON] = sorted(str(node) for node in drawn.nodes)
    edges: list[JSON] = [
        [s, t, c] for s, t, c in sorted((str(e.source), str(e.target), bool(e.conditional)) for e in drawn.edges)
    ]
    return {"nodes": nodes, "edges": edges}


def graph_spec_digest(graph: Any) -> str:
    """SHA-256 of `graph_spec(graph)` as canonical JSON (sorted keys, no spaces): the handler's default
    spec digest when it is given the graph. It changes when a node is added, removed or renamed, or an
    edge changes; not when a node's code or prompt changes (pass `spec_digest` for that)."""
    return digest_of(graph_spec(graph))


@dataclass(frozen=True, slots=True)
class _Open:
    """A LangChain run that has started: its top-level run, its name and its LangGraph node."""

    root: UUID
    name: str
    node: str | None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _is_interrupt(error: BaseException) -> bool:
    # LangGraph's GraphInterrupt and its parent GraphBubbleUp are control flow, not failures
    return any(cls.__name__ == "GraphBubbleUp" for cls in type(error).__mro__)


def _usage(response: LLMResult) -> dict[str, JSON] | None:
    """Token usage: the messages' `usage_metadata` summed, else the provider's `llm_output`."""
    total: dict[str, int] = {}
    for generations in response.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                usage = getattr(generation.message, "usage_metadata", None)
                for key in ("input_tokens", "output_tokens", "total_tokens"):
                    if usage and isinstance(usage.get(key), int):
                        total[key] = total.get(key, 0) + usage[key]
    if total:
        return dict(total)
    output = response.llm_output or {}
    found = output.get("token_usage") or output.get("usage")
    return jsonable(found) if isinstance(found, Mapping) else None


def _model_of(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str | None:
    params = kwargs.get("invocation_params") or {}
    metadata = kwargs.get("metadata") or {}
    init = (serialized or {}).get("kwargs") or {}
    for candidate in (
        params.get("model"),
        params.get("model_name"),
        metadata.get("ls_model_name"),
        init.get("model"),
        init.get("model_name"),
        params.get("_type"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _response_model(response: LLMResult) -> str | None:
    output = response.llm_output or {}
    if isinstance(output.get("model_name"), str):
        return str(output["model_name"])
    for generations in response.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                name = generation.message.response_metadata.get("model_name")
                if isinstance(name, str):
                    return name
    return None


class LedgerCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records each top-level invocation as one run (module docstring).

    `agent_name` names the runs' agent. `spec_digest` (64 hex characters)
    names what runs; unset, it is `graph_spec_digest(graph)` when `graph` is
    given, else the SHA-256 of `{"agent_name": ..., "runnable": <the top-level
    runnable's name>}` as canonical JSON. `tags` go on every run, with
    `framework`, `lc_run_id`, `runnable` and, where LangGraph has them,
    `thread_id` and `resumed`. `capture_io=False` leaves inputs, outputs,
    prompts and documents out of the events (names, ids, models and usage
    stay). `settings` / keyword options tune the writers (`WriterSettings`);
    `when_full` decides what happens when the ledger stays away: "block"
    (default; the agent waits once `max_buffered_events` are waiting, and an
    invocation whose run cannot be ended raises the `LedgerError`) or "drop"
    (events dropped and counted in `dropped`, with a warning; never waits).
    """

    # Our callbacks only queue, so LangChain may call them directly in its event
    # loop instead of handing each one to a thread pool.
    run_inline = True

    def __init__(
        self,
        client: Client,
        agent_name: str,
        spec_digest: str | None = None,
        tags: Mapping[str, JSON] | None = None,
        *,
        graph: Any = None,
        capture_io: bool = True,
        inactivity_timeout: float | timedelta | None = None,
        settings: WriterSettings | None = None,
        **options: Unpack[WriterOptions],
    ) -> None:
        super().__init__()
        self.agent_name = agent_name
        self.spec_digest = (
            spec_digest if spec_digest is not None else (graph_spec_digest(graph) if graph is not None else None)
        )
        self.tags = dict(tags or {})
        self.capture_io = capture_io
        self._inactivity_timeout = inactivity_timeout
        self._recorder = Recorder(client, resolve_settings(settings, options))
        self.raise_error = self._recorder.settings.when_full == "block"
        self._lock = threading.Lock()
        self._open: dict[UUID, _Open] = {}  # LangChain runs that have started and not ended
        self._ledger_run: dict[UUID, str] = {}  # top-level LangChain run -> ledger run id
        self._ended: collections.OrderedDict[str, Future[Run]] = collections.OrderedDict()
        self.run_ids: list[str] = []
        """Ledger run ids of the top-level invocations, in the order they started."""

    # -- what the user reads -----------------------------------------------------

    @property
    def run_id(self) -> str:
        """The ledger run of the latest top-level invocation this handler saw start."""
        if not self.run_ids:
            raise RuntimeError("no invocation has started with this handler yet")
        return self.run_ids[-1]

    @property
    def dropped(self) -> int:
        """Events not stored (only with `when_full="drop"`, or for runs that could not be created)."""
        return self._recorder.dropped

    def wait(self, run_id: str | None = None, timeout: float | None = None) -> Run:
        """Wait until the run (default: the latest) is ended in the ledger; raises what kept it from that."""
        run_id = run_id or self.run_id
        with self._lock:
            future = self._ended.get(run_id)
        if future is None:
            raise RuntimeError(f"run {run_id} has not ended yet, or is too old to be waited for")
        return future.result(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is in the ledger (runs ended included); False on timeout."""
        return self._recorder.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - the bound of the thread's wait
        """`flush` for asyncio code: waits in a thread, so the event loop goes on."""
        return await asyncio.to_thread(self._recorder.flush, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the background thread; the handler records nothing more (its callbacks
        then do nothing, with one warning, and a blocking handler's invocations raise at their end)."""
        return self._recorder.close(timeout)

    # -- the tree ------------------------------------------------------------------

    def _enter(
        self, run_id: UUID, parent_run_id: UUID | None, name: str, inputs: Any, metadata: Mapping[str, Any] | None
    ) -> UUID:
        """The top-level run `run_id` belongs to, starting a ledger run when it is one."""
        node = (metadata or {}).get("langgraph_node")
        with self._lock:
            parent = self._open.get(parent_run_id) if parent_run_id is not None else None
            if parent is not None:
                self._open[run_id] = _Open(parent.root, name, None if node is None else str(node))
                return parent.root
            self._open[run_id] = _Open(run_id, name, None if node is None else str(node))
            ledger_run = str(uuid.uuid4())
            self._ledger_run[run_id] = ledger_run
            self.run_ids.append(ledger_run)
        tags: dict[str, JSON] = {**self.tags, "framework": "langchain", "lc_run_id": str(run_id), "runnable": name}
        thread_id = (metadata or {}).get("thread_id")
        if thread_id is not None:
            tags["thread_id"] = str(thread_id)
        if type(inputs).__name__ == "Command" and getattr(inputs, "resume", None) is not None:
            tags["resumed"] = True
        digest = self.spec_digest or digest_of({"agent_name": self.agent_name, "runnable": name})
        self._recorder.start(
            str(run_id),
            run_id=ledger_run,
            spec_digest=digest,
            agent_name=self.agent_name,
            tags=tags,
            inactivity_timeout=self._inactivity_timeout,
        )
        return run_id

    def _root(self, run_id: UUID) -> UUID | None:
        entry = self._open.get(run_id)
        return None if entry is None else entry.root

    def _emit(
        self,
        root: UUID,
        kind: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        fields: dict[str, JSON],
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> None:
        payload: dict[str, JSON] = {
            "lc_run_id": str(run_id),
            "lc_parent_run_id": str(parent_run_id) if parent_run_id else None,
        }
        entry = self._open.get(run_id)
        if entry is not None:
            payload["name"] = entry.name
            if entry.node is not None:
                payload["node"] = entry.node
        if metadata and isinstance(metadata.get("langgraph_step"), int):
            payload["step"] = metadata["langgraph_step"]
        if tags:
            payload["tags"] = [str(t) for t in tags]
        payload.update(fields)
        self._recorder.emit(str(root), kind, payload)

    def _io(self, value: Any) -> JSON:
        return jsonable(value) if self.capture_io else None

    def _leave(self, run_id: UUID, ending: Ending | None) -> None:
        """Forget `run_id`; when it is a top-level run, end its ledger run with `ending`."""
        with self._lock:
            entry = self._open.pop(run_id, None)
            ledger_run = self._ledger_run.pop(run_id, None) if entry is not None and entry.root == run_id else None
        if ledger_run is None or ending is None:
            return
        future = self._recorder.end(str(run_id), ending)
        with self._lock:
            self._ended[ledger_run] = future
            while len(self._ended) > _KEPT_RUNS:
                self._ended.popitem(last=False)
        if self._recorder.settings.when_full == "block" and not _in_event_loop():
            future.result()  # raises the LedgerError that kept the run from being ended

    # -- chains and graph nodes ------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "chain")
        root = self._enter(run_id, parent_run_id, name, inputs, metadata)
        self._emit(root, "chain_start", run_id, parent_run_id, {"inputs": self._io(inputs)}, metadata, tags)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        root = self._root(run_id)
        if root is None:
            return
        self._emit(root, "chain_end", run_id, parent_run_id, {"outputs": self._io(outputs)})
        self._leave(run_id, Ending("complete"))

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        root = self._root(run_id)
        if root is None:
            return
        if _is_interrupt(error):
            interrupts = error.args[0] if error.args else ()
            self._emit(root, "interrupt", run_id, parent_run_id, {"interrupts": jsonable(interrupts)})
            self._leave(run_id, Ending("complete"))
            return
        ending = ending_for(error)
        self._emit(
            root, "chain_error", run_id, parent_run_id, {"error": ending.reason, "error_type": type(error).__name__}
        )
        self._leave(run_id, ending)

    # -- models --------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, self._io(messages), run_id, parent_run_id, tags, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, self._io(prompts), run_id, parent_run_id, tags, metadata, kwargs)

    def _llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: JSON,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "llm")
        root = self._enter(run_id, parent_run_id, name, None, metadata)
        self._emit(
            root,
            "llm_start",
            run_id,
            parent_run_id,
            {"model": _model_of(serialized, {**kwargs, "metadata": metadata}), "prompts": prompts},
            metadata,
            tags,
        )

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        root = self._root(run_id)
        if root is None:
            return
        outputs = [[generation.text for generation in generations] for generations in response.generations]
        self._emit(
            root,
            "llm_end",
            run_id,
            parent_run_id,
            {"model": _response_model(response), "usage": _usage(response), "outputs": self._io(outputs)},
        )
        self._leave(run_id, Ending("complete"))

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._error("llm_error", error, run_id, parent_run_id)

    # -- tools and retrievers --------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "tool")
        root = self._enter(run_id, parent_run_id, name, inputs, metadata)
        self._emit(
            root,
            "tool_start",
            run_id,
            parent_run_id,
            {"input": self._io(inputs if inputs is not None else input_str)},
            metadata,
            tags,
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        root = self._root(run_id)
        if root is None:
            return
        self._emit(root, "tool_end", run_id, parent_run_id, {"output": self._io(output)})
        self._leave(run_id, Ending("complete"))

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._error("tool_error", error, run_id, parent_run_id)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = str(kwargs.get("name") or (serialized or {}).get("name") or "retriever")
        root = self._enter(run_id, parent_run_id, name, query, metadata)
        self._emit(root, "retriever_start", run_id, parent_run_id, {"query": self._io(query)}, metadata, tags)

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        root = self._root(run_id)
        if root is None:
            return
        docs = [{"page_content": d.page_content, "metadata": d.metadata} for d in documents]
        self._emit(root, "retriever_end", run_id, parent_run_id, {"documents": len(docs), "results": self._io(docs)})
        self._leave(run_id, Ending("complete"))

    def on_retriever_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._error("retriever_error", error, run_id, parent_run_id)

    def _error(self, kind: str, error: BaseException, run_id: UUID, parent_run_id: UUID | None) -> None:
        root = self._root(run_id)
        if root is None:
            return
        ending = ending_for(error)
        self._emit(root, kind, run_id, parent_run_id, {"error": ending.reason, "error_type": type(error).__name__})
        self._leave(run_id, ending)
