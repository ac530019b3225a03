"""The LangChain/LangGraph handler against the real daemon: real graphs, LangChain's fake chat model."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")

from aivcs.ledger import Client, Event, NotFound, RunStatus, Unavailable
from aivcs.ledger.langchain import LedgerCallbackHandler, graph_spec, graph_spec_digest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import tool
from langgraph.checkpoint.memory import MemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from harness.daemon import free_port
from harness.data import unique
from tests.client.conftest import events_of


class State(TypedDict, total=False):
    question: str
    answer: str
    notes: Annotated[list[str], operator.add]


def fake_model(replies: int = 10) -> GenericFakeChatModel:
    usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    return GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(content=f"reply {i}", usage_metadata=usage)  # type: ignore[arg-type]
                for i in range(replies)
            ]
        )
    )


@tool
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Shelf(BaseRetriever):
    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [Document(page_content=f"about {query}", metadata={"id": 1})]


def planner_graph(model: GenericFakeChatModel, *, fail_in: str | None = None) -> Any:
    def plan(state: State) -> State:
        if fail_in == "plan":
            raise ValueError("plan went wrong")
        return {"notes": ["planned"]}

    def answer(state: State) -> State:
        reply = model.invoke(state["question"])
        weather = lookup.invoke({"city": "Oslo"})
        docs = Shelf().invoke("Oslo")
        return {"answer": f"{reply.content}; {weather}; {len(docs)} docs"}

    graph = StateGraph(State)
    graph.add_node("plan", plan)
    graph.add_node("answer", answer)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "answer")
    graph.add_edge("answer", END)
    return graph.compile()


def outline(events: list[Event]) -> list[tuple[str, str | None]]:
    """(kind, name or node) per event, the shape of the tree as recorded."""
    return [(e.kind, e.payload.get("name")) for e in events]


EXPECTED = [
    ("chain_start", "LangGraph"),
    ("chain_start", "plan"),
    ("chain_end", "plan"),
    ("chain_start", "answer"),
    ("llm_start", "GenericFakeChatModel"),
    ("llm_end", "GenericFakeChatModel"),
    ("tool_start", "lookup"),
    ("tool_end", "lookup"),
    ("retriever_start", "Shelf"),
    ("retriever_end", "Shelf"),
    ("chain_end", "answer"),
    ("chain_end", "LangGraph"),
]


def node_payloads(events: list[Event]) -> list[dict[str, Any]]:
    return [e.payload for e in events]


def test_a_graph_invocation_is_one_completed_run_with_its_steps_in_order(client: Client) -> None:
    app = planner_graph(fake_model())
    agent = unique("lc-planner")
    handler = LedgerCallbackHandler(client, agent_name=agent, graph=app, tags={"suite": "adapters"})
    result = app.invoke({"question": "weather?"}, config={"callbacks": [handler]})
    assert result["answer"] == "reply 0; sunny in Oslo; 1 docs"

    run = client.runs.get(handler.run_id)  # ended before invoke returned
    assert run.status is RunStatus.COMPLETED and run.success
    assert run.agent_name == agent
    assert run.spec_digest == graph_spec_digest(app)
    assert run.tags["suite"] == "adapters" and run.tags["framework"] == "langchain"
    events = events_of(client, handler.run_id)
    assert run.total_events == len(events) == len(EXPECTED)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert outline(events) == EXPECTED

    # LangChain's ids rebuild the tree: graph > node > model/tool/retriever
    top = events[0].payload
    assert top["lc_parent_run_id"] is None and run.tags["lc_run_id"] == top["lc_run_id"]
    by_kind = {e.kind + ":" + str(e.payload.get("name")): e.payload for e in events}
    answer = by_kind["chain_start:answer"]
    assert answer["lc_parent_run_id"] == top["lc_run_id"] and answer["node"] == "answer" and answer["step"] == 2
    for child in ("llm_start:GenericFakeChatModel", "tool_start:lookup", "retriever_start:Shelf"):
        assert by_kind[child]["lc_parent_run_id"] == answer["lc_run_id"], child

    llm_end = next(e.payload for e in events if e.kind == "llm_end")
    assert llm_end["usage"] == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    assert llm_end["outputs"] == [["reply 0"]]
    assert by_kind["llm_start:GenericFakeChatModel"]["model"]  # the model is named
    assert next(e.payload for e in events if e.kind == "tool_end")["output"] == "sunny in Oslo"
    assert next(e.payload for e in events if e.kind == "retriever_end")["documents"] == 1
    assert events[-1].payload["outputs"]["answer"] == result["answer"]


def test_the_default_digest_follows_the_graph_structure() -> None:
    one, same = planner_graph(fake_model()), planner_graph(fake_model())
    assert graph_spec_digest(one) == graph_spec_digest(same)
    spec = graph_spec(one)
    assert spec["nodes"] == ["__end__", "__start__", "answer", "plan"]
    assert ["plan", "answer", False] in spec["edges"]  # type: ignore[operator]
    other = StateGraph(State)
    other.add_node("plan", lambda s: {})
    other.add_edge(START, "plan")
    other.add_edge("plan", END)
    assert graph_spec_digest(other.compile()) != graph_spec_digest(one)


def test_an_exception_fails_the_run_with_it_as_the_reason(client: Client) -> None:
    app = planner_graph(fake_model(), fail_in="plan")
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-fail"))
    with pytest.raises(ValueError, match="plan went wrong"):
        app.invoke({"question": "q"}, config={"callbacks": [handler]})
    run = client.runs.get(handler.run_id)
    assert run.status is RunStatus.FAILED
    assert run.status_reason == "ValueError: plan went wrong"
    events = events_of(client, handler.run_id)
    assert [e.kind for e in events] == ["chain_start", "chain_start", "chain_error", "chain_error"]
    assert events[2].payload["node"] == "plan" and events[2].payload["error_type"] == "ValueError"


def test_nested_graphs_are_one_run_and_keep_their_parents(client: Client) -> None:
    model = fake_model()
    inner = planner_graph(model)

    def delegate(state: State) -> State:
        return {"answer": inner.invoke({"question": state["question"]})["answer"]}  # called, not a node

    outer_graph = StateGraph(State)
    outer_graph.add_node("research", inner)  # a compiled graph as a node
    outer_graph.add_node("delegate", delegate)
    outer_graph.add_edge(START, "research")
    outer_graph.add_edge("research", "delegate")
    outer_graph.add_edge("delegate", END)
    outer = outer_graph.compile()

    handler = LedgerCallbackHandler(client, agent_name=unique("lc-nested"))
    outer.invoke({"question": "q"}, config={"callbacks": [handler]})
    assert len(handler.run_ids) == 1
    assert client.runs.get(handler.run_id).status is RunStatus.COMPLETED
    events = events_of(client, handler.run_id)
    starts = {e.payload["lc_run_id"]: e.payload for e in events if e.kind.endswith("_start")}
    # every event but the top-level's own has a parent that started earlier in the same run
    top = events[0].payload["lc_run_id"]
    assert events[-1].payload["lc_run_id"] == top
    for event in events[1:-1]:
        assert event.payload["lc_parent_run_id"] in starts
    llm_calls = [e for e in events if e.kind == "llm_end"]
    assert len(llm_calls) == 2  # once through the subgraph node, once through the called graph
    assert sum(e.payload["usage"]["total_tokens"] for e in llm_calls) == 36


async def test_async_invocation_and_astream(client: Client) -> None:
    app = planner_graph(fake_model())
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-async"))
    await app.ainvoke({"question": "q"}, config={"callbacks": [handler]})
    chunks = [
        chunk async for chunk in app.astream({"question": "q"}, config={"callbacks": [handler]}, stream_mode="updates")
    ]
    assert [next(iter(c)) for c in chunks] == ["plan", "answer"]
    assert await handler.aflush(timeout=30)
    assert len(handler.run_ids) == 2
    for run_id in handler.run_ids:
        assert handler.wait(run_id).status is RunStatus.COMPLETED
        assert outline(events_of(client, run_id)) == EXPECTED


async def test_concurrent_async_invocations_are_separate_runs(client: Client) -> None:
    app = planner_graph(fake_model(20))
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-gather"))
    await asyncio.gather(*(app.ainvoke({"question": f"q{i}"}, config={"callbacks": [handler]}) for i in range(5)))
    assert await handler.aflush(timeout=30)
    assert len(set(handler.run_ids)) == 5
    questions = set()
    for run_id in handler.run_ids:
        events = events_of(client, run_id)
        assert outline(events) == EXPECTED  # no event of one invocation in another's run
        questions.add(events[0].payload["inputs"]["question"])
    assert questions == {f"q{i}" for i in range(5)}


def test_parallel_invocations_from_threads_are_separate_runs(client: Client) -> None:
    app = planner_graph(fake_model(20))
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-threads"))
    config: Any = {"callbacks": [handler]}
    threads = [
        threading.Thread(target=app.invoke, args=({"question": "q"},), kwargs={"config": config}) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(handler.run_ids)) == 4
    for run_id in handler.run_ids:
        assert client.runs.get(run_id).status is RunStatus.COMPLETED
        assert outline(events_of(client, run_id)) == EXPECTED


def test_streaming_completes_and_an_abandoned_stream_is_cancelled(client: Client) -> None:
    app = planner_graph(fake_model())
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-stream"))
    updates = list(app.stream({"question": "q"}, config={"callbacks": [handler]}, stream_mode="updates"))
    assert len(updates) == 2
    assert client.runs.get(handler.run_id).status is RunStatus.COMPLETED
    assert outline(events_of(client, handler.run_id)) == EXPECTED

    stream: Iterator[Any] = app.stream({"question": "q"}, config={"callbacks": [handler]}, stream_mode="updates")
    next(stream)
    stream.close()  # the caller stops reading after the first step
    run = handler.wait(timeout=30)
    assert run.run_id == handler.run_ids[1]
    assert run.status is RunStatus.CANCELLED
    assert run.status_reason == "GeneratorExit"


def test_an_interrupted_graph_resumed_is_two_runs_on_one_thread(client: Client) -> None:
    def ask(state: State) -> State:
        return {"answer": str(interrupt({"question": "go ahead?"}))}

    graph = StateGraph(State)
    graph.add_node("plan", lambda state: {"notes": ["planned"]})
    graph.add_node("ask", ask)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "ask")
    graph.add_edge("ask", END)
    app = graph.compile(checkpointer=MemorySaver())
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-interrupt"), graph=app)
    config: Any = {"callbacks": [handler], "configurable": {"thread_id": unique("thread")}}

    first = app.invoke({"question": "q"}, config=config)
    assert "__interrupt__" in first
    paused = client.runs.get(handler.run_id)
    assert paused.status is RunStatus.COMPLETED and "resumed" not in paused.tags
    kinds = [e.kind for e in events_of(client, paused.run_id)]
    assert kinds == ["chain_start", "chain_start", "chain_end", "chain_start", "interrupt", "chain_end"]
    interrupt_event = next(e for e in events_of(client, paused.run_id) if e.kind == "interrupt")
    assert interrupt_event.payload["node"] == "ask"
    assert interrupt_event.payload["interrupts"][0]["value"] == {"question": "go ahead?"}  # type: ignore[index]

    second = app.invoke(Command(resume="yes"), config=config)
    assert second["answer"] == "yes"
    resumed = client.runs.get(handler.run_id)
    assert resumed.run_id != paused.run_id and resumed.status is RunStatus.COMPLETED
    assert resumed.tags["resumed"] is True
    assert resumed.tags["thread_id"] == paused.tags["thread_id"] == config["configurable"]["thread_id"]
    assert [e.payload.get("name") for e in events_of(client, resumed.run_id) if e.kind == "chain_start"] == [
        "LangGraph",
        "ask",
    ]


def test_with_the_ledger_away_a_dropping_handler_never_stops_the_agent() -> None:
    app = planner_graph(fake_model())
    with Client(f"127.0.0.1:{free_port()}", timeout=2) as nowhere:
        handler = LedgerCallbackHandler(
            nowhere,
            agent_name="lc-away",
            when_full="drop",
            retry_timeout=0.5,
            max_buffered_events=200,
            max_batch_events=200,
        )
        started = time.monotonic()
        for _ in range(3):
            assert app.invoke({"question": "q"}, config={"callbacks": [handler]})["answer"].startswith("reply")
        assert time.monotonic() - started < 10  # generous: nothing waited on the ledger's retries
        assert handler.flush(timeout=60)
        assert handler.dropped == 3 * len(EXPECTED)  # nothing could be stored, and all of it is counted
        with pytest.raises(Unavailable):
            handler.wait(timeout=10)
        handler.close()


def test_with_the_ledger_away_a_blocking_handler_raises_at_the_end() -> None:
    app = planner_graph(fake_model())
    with Client(f"127.0.0.1:{free_port()}", timeout=2) as nowhere:
        handler = LedgerCallbackHandler(nowhere, agent_name="lc-away", retry_timeout=0.5)
        with pytest.raises(Unavailable):
            app.invoke({"question": "q"}, config={"callbacks": [handler]})
        handler.close()


def test_a_closed_handler_left_attached_does_not_break_the_agent(client: Client) -> None:
    app = planner_graph(fake_model())
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-closed"), when_full="drop")
    app.invoke({"question": "q"}, config={"callbacks": [handler]})
    assert handler.close(timeout=30)
    assert client.runs.get(handler.run_id).status is RunStatus.COMPLETED
    assert app.invoke({"question": "q"}, config={"callbacks": [handler]})["answer"].startswith("reply")
    assert handler.dropped == len(EXPECTED)  # the second invocation's events, counted, not stored
    with pytest.raises(NotFound):
        client.runs.get(handler.run_id)


def test_parallel_branches_of_one_graph_are_recorded_in_one_run(client: Client) -> None:
    model = fake_model(20)

    def branch(label: str) -> Any:
        def node(state: State) -> State:
            time.sleep(0.01)  # let the branches overlap
            return {"notes": [f"{label}: {model.invoke(label).content}"]}

        return node

    graph = StateGraph(State)
    for label in ("left", "right", "middle"):
        graph.add_node(label, branch(label))
        graph.add_edge(START, label)
        graph.add_edge(label, END)
    app = graph.compile()
    handler = LedgerCallbackHandler(client, agent_name=unique("lc-fanout"))
    assert len(app.invoke({"question": "q"}, config={"callbacks": [handler]})["notes"]) == 3
    assert client.runs.get(handler.run_id).status is RunStatus.COMPLETED
    events = events_of(client, handler.run_id)
    assert len(events) == 2 + 3 * 4
    seen: dict[str, int] = {}
    for event in events:  # each LangChain run starts before it ends, whatever the interleaving
        if event.kind.endswith("_start"):
            seen[event.payload["lc_run_id"]] = event.seq  # type: ignore[index]
        else:
            assert seen[event.payload["lc_run_id"]] < event.seq  # type: ignore[index]
    assert {e.payload["name"] for e in events if e.kind == "chain_end"} == {"left", "right", "middle", "LangGraph"}
