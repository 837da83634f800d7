"""The OpenAI-compatible endpoint agents call during rollouts: one base URL per episode.

``AgentEndpoint`` serves, on ``127.0.0.1`` (a free port unless one is given), for every open
episode ``http://127.0.0.1:PORT/episodes/<id>/v1``:

- ``POST /chat/completions``: messages (and ``tools``) rendered to token ids
  (:mod:`mtgrpo.agents.chat`), sampled by the rollout backend, answered with an OpenAI
  ``chat.completion`` (a parsed tool call as ``tool_calls``);
- ``POST /completions``: a text or token-id prompt, answered with a ``text_completion``;
- ``GET /models``: the one model served.

The backend is the run's sampler (the vLLM server through token ids, or the transformers
sampler on the live policy); every call's prompt ids, sampled ids and log-probs go to the
episode's :class:`~mtgrpo.agents.recorder.EpisodeRecorder` as the backend produced them.
Sampling follows the run (``temperature``, ``top_p``: what the loss assumes); a request's own
``temperature``/``top_p`` are ignored, its ``max_tokens`` and ``stop`` are honoured within
``max_tokens_per_turn`` and the episode's ``max_completion_length``. ``stream: true`` and
``n > 1`` are refused with one clear error. ``return_token_ids: true`` (vLLM's field) adds the
ids to the answer.

Requests arriving together are sent to the sampler in one ``generate`` call (a short window),
so the transformers sampler decodes them as one batch and never runs twice at once; a vLLM
server gets them together too and batches them itself.

The server is Starlette on uvicorn (both come with vLLM) in a thread of its own, so an agent
started as a separate process reaches it as well as an in-process one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from mtgrpo.agents.chat import (ChatRenderer, Message, RequestError, SchemaTool, messages_of,
                                schema_tools)
from mtgrpo.agents.recorder import EpisodeRecorder

log = logging.getLogger(__name__)

MODEL_NAME = "mtgrpo-policy"
STREAM_REFUSED = ("streaming is not supported by the mtgrpo agent endpoint; send stream: false "
                  "(docs/agents.md)")


@dataclass
class _LastCall:
    """What the previous chat call of an episode saw and answered (for extension)."""

    messages: list[Message]
    tools: list[SchemaTool]
    reply: Message
    sampled: list[int]


@dataclass
class _EpisodeState:
    recorder: EpisodeRecorder
    lock: asyncio.Lock | None = None
    last_chat: _LastCall | None = None
    last_text: str | None = None  # /v1/completions: the previous prompt + completion text
    calls: int = 0


@dataclass
class _Pending:
    prompt: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    future: asyncio.Future = field(repr=False)


class _BackendFailure(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class Batcher:
    """Sends the requests that arrive within ``window_s`` of each other to the sampler in one
    ``generate`` call per stop-string set. ``serial``: one call at a time (a sampler running on
    the trainer's model); otherwise calls overlap (an HTTP server batches them itself)."""

    def __init__(self, sampler, *, temperature: float, top_p: float, window_s: float = 0.005,
                 serial: bool = True):
        self.sampler = sampler
        self.temperature = temperature
        self.top_p = top_p
        self.window_s = window_s
        self.serial = serial
        self._pending: list[_Pending] = []
        self._flush: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None

    async def sample(self, prompt: list[int], max_tokens: int, stop: Sequence[str]):
        loop = asyncio.get_running_loop()
        item = _Pending(prompt, max_tokens, tuple(stop), loop.create_future())
        self._pending.append(item)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._run())
        return await item.future

    async def _run(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        await asyncio.sleep(self.window_s)
        if self.serial:
            await self._lock.acquire()
        batch, self._pending, self._flush = self._pending, [], None
        try:
            kinds: dict[tuple[str, ...], list[_Pending]] = {}
            for item in batch:
                kinds.setdefault(item.stop, []).append(item)
            await asyncio.gather(*(self._generate(items) for items in kinds.values()))
        finally:
            if self.serial:
                self._lock.release()

    async def _generate(self, items: list[_Pending]) -> None:
        try:
            samples = await self.sampler.generate(
                [i.prompt for i in items], max_tokens=[i.max_tokens for i in items],
                temperature=self.temperature, top_p=self.top_p, stop=list(items[0].stop))
        except BaseException as err:  # noqa: BLE001 - every waiting request gets the failure
            for item in items:
                if not item.future.done():
                    item.future.set_exception(err)
            if not isinstance(err, Exception):
                raise
            return
        for item, sample in zip(items, samples):
            if not item.future.done():
                item.future.set_result(sample)


class AgentEndpoint:
    """The endpoint's server (a thread running uvicorn) and its open episodes."""

    def __init__(self, sampler, renderer: ChatRenderer, *, temperature: float, top_p: float,
                 max_tokens_per_turn: int, max_completion_length: int, max_prompt_length: int,
                 port: int = 0, host: str = "127.0.0.1", model_name: str = MODEL_NAME,
                 batch_window_s: float = 0.005):
        self.sampler = sampler
        self.renderer = renderer
        self.max_tokens_per_turn = max_tokens_per_turn
        self.max_completion_length = max_completion_length
        self.max_prompt_length = max_prompt_length
        self.host = host
        self.model_name = model_name
        # An HTTP backend (the vLLM server: it has a base URL) batches overlapping requests
        # itself; an in-process sampler must not run twice at once.
        serial = getattr(sampler, "base_url", None) is None
        self.batcher = Batcher(sampler, temperature=temperature, top_p=top_p,
                               window_s=batch_window_s, serial=serial)
        self._episodes: dict[str, _EpisodeState] = {}
        # The first backend failure (the vLLM server died, timed out): the agent sees HTTP 500,
        # the runner re-raises it after the rollout, so the run stops as the built-in loop does.
        self.backend_error: BaseException | None = None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, int(port)))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._server: Any = None  # uvicorn.Server once started
        self._thread: threading.Thread | None = None

    # -- episodes ---------------------------------------------------------------------------------
    def base_url(self, episode_id: str) -> str:
        return f"{self.url}/episodes/{episode_id}/v1"

    def open_episode(self, recorder: EpisodeRecorder) -> str:
        if recorder.episode_id in self._episodes:
            raise ValueError(f"episode {recorder.episode_id} is already open")
        self._episodes[recorder.episode_id] = _EpisodeState(recorder)
        return self.base_url(recorder.episode_id)

    def close_episode(self, episode_id: str) -> None:
        """Later calls of the episode get 404 (an agent that outlived its episode)."""
        self._episodes.pop(episode_id, None)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "AgentEndpoint":
        import uvicorn

        if self._thread is not None:
            return self
        config = uvicorn.Config(self.app(), log_level="warning", lifespan="off",
                                access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._socket.listen(1024)

        def serve() -> None:
            asyncio.run(self._server.serve(sockets=[self._socket]))

        self._thread = threading.Thread(target=serve, name="mtgrpo-agent-endpoint", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the agent endpoint did not start on {self.url}")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> "AgentEndpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the ASGI app -----------------------------------------------------------------------------
    def app(self):
        from starlette.applications import Starlette
        from starlette.routing import Route

        base = "/episodes/{episode_id}/v1"
        return Starlette(routes=[
            Route(base + "/models", self._models, methods=["GET"]),
            Route(base + "/chat/completions", self._chat, methods=["POST"]),
            Route(base + "/completions", self._completions, methods=["POST"]),
        ])

    @staticmethod
    def _error(status: int, message: str, kind: str = "invalid_request_error"):
        from starlette.responses import JSONResponse

        return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                       "code": None}}, status_code=status)

    def _state(self, request) -> _EpisodeState | None:
        return self._episodes.get(request.path_params["episode_id"])

    async def _models(self, request):
        from starlette.responses import JSONResponse

        if self._state(request) is None:
            return self._error(404, f"episode {request.path_params['episode_id']} is not open")
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": 0, "owned_by": "mtgrpo"}]})

    async def _body(self, request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("stream"):
            raise RequestError(STREAM_REFUSED)
        if body.get("n", 1) not in (1, None):
            raise RequestError("n must be 1: each call is one turn of one episode")
        return body

    async def _chat(self, request):
        return await self._serve(request, self._chat_call)

    async def _completions(self, request):
        return await self._serve(request, self._completion_call)

    async def _serve(self, request, call):
        from starlette.responses import JSONResponse

        state = self._state(request)
        if state is None:
            return self._error(404, f"episode {request.path_params['episode_id']} is not open "
                                    "(finished, timed out or never started)")
        try:
            body = await self._body(request)
            if state.lock is None:
                state.lock = asyncio.Lock()
            async with state.lock:  # one episode's calls are recorded in order
                return JSONResponse(await call(state, body))
        except RequestError as err:
            return self._error(400, str(err))
        except _BackendFailure as failure:  # the agent sees a 500; the runner stops the run
            cause = failure.error
            if self.backend_error is None:
                self.backend_error = cause
            log.warning("agent endpoint: episode %s: the rollout backend failed: %s: %s",
                        state.recorder.episode_id, type(cause).__name__, cause)
            return self._error(500, f"the rollout backend failed: {type(cause).__name__}: "
                                    f"{cause}", "server_error")
        except Exception as err:  # noqa: BLE001 - one request's fault costs that request
            log.warning("agent endpoint: episode %s: %s: %s", state.recorder.episode_id,
                        type(err).__name__, err)
            return self._error(500, f"{type(err).__name__}: {err}", "server_error")

    async def _sample(self, prompt: list[int], budget: int, stop: list[str]):
        try:
            return await self.batcher.sample(prompt, budget, stop)
        except Exception as err:  # noqa: BLE001 - whatever the sampler raised
            raise _BackendFailure(err) from err

    # -- one call ---------------------------------------------------------------------------------
    def _budget(self, state: _EpisodeState, prompt: list[int], body: dict) -> int:
        used = state.recorder.completion_used(prompt)
        if used == 0 and len(prompt) > self.max_prompt_length:
            raise RequestError(f"the prompt has {len(prompt)} tokens, over max_prompt_length "
                               f"{self.max_prompt_length}")
        room = self.max_completion_length - used
        if room < 1:
            state.recorder.truncated = True
            raise RequestError(f"the episode used its max_completion_length "
                               f"({self.max_completion_length} tokens)")
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        budget = min(self.max_tokens_per_turn, room)
        if asked is not None:
            if not isinstance(asked, int) or asked < 1:
                raise RequestError("max_tokens must be a positive integer")
            budget = min(budget, asked)
        return budget

    def _stop(self, body: dict) -> list[str]:
        extra = body.get("stop") or []
        extra = [extra] if isinstance(extra, str) else list(extra)
        if not all(isinstance(s, str) for s in extra):
            raise RequestError("stop must be a string or a list of strings")
        return list(dict.fromkeys(list(self.renderer.parser.stop) + extra))

    def _chat_prompt(self, state: _EpisodeState, messages: list[Message],
                     tools: list[SchemaTool]) -> tuple[list[int], list[str]]:
        last = state.last_chat
        n = len(last.messages) if last else 0
        history = state.recorder.history()
        if last is not None and history is not None and last.tools == tools \
                and len(messages) > n + 1 and messages[:n] == last.messages \
                and messages[n].same_reply(last.reply):
            new = messages[n + 1:]
            try:
                tail = self.renderer.tail(new, last.sampled)
            except RequestError:
                tail = None
            if tail is not None:
                return history + tail, [m.content for m in new if m.role == "tool"]
        # A full render; the tool results since the last assistant message are the context.
        tail_start = max((i + 1 for i, m in enumerate(messages) if m.role == "assistant"),
                         default=0)
        prompt = self.renderer.render(messages, tools)
        return prompt, [m.content for m in messages[tail_start:] if m.role == "tool"]

    async def _chat_call(self, state: _EpisodeState, body: dict) -> dict:
        messages = messages_of(body.get("messages"))
        tools = schema_tools(body.get("tools"))
        prompt, results = self._chat_prompt(state, messages, tools)
        budget = self._budget(state, prompt, body)
        sample = await self._sample(prompt, budget, self._stop(body))
        called = state.last_chat.reply.tool_calls if state.last_chat else ()
        state.recorder.add(prompt, sample.token_ids, sample.logprobs, sample.text,
                           sample.finish_reason, tool_results=results,
                           tool_name=called[0][0] if called else "")
        state.calls += 1
        call_id = f"call_{state.recorder.episode_id}_{state.calls}"
        message, reduced = self.renderer.reply(sample.text, call_id)
        state.last_chat = _LastCall(messages, list(tools), reduced, list(sample.token_ids))
        state.last_text = None
        finish = "tool_calls" if message.get("tool_calls") else (
            "length" if sample.finish_reason == "length" else "stop")
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish,
                                  "logprobs": self._logprobs(sample, body)}
        answer = self._answer("chat.completion", state, body, prompt, sample, choice)
        return answer

    async def _completion_call(self, state: _EpisodeState, body: dict) -> dict:
        if body.get("echo"):
            raise RequestError("echo is not supported")
        raw = body.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (str, list)):
            raw = raw[0]  # a batch of one
        if isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw):
            prompt = [int(i) for i in raw]
            text = None
        elif isinstance(raw, str) and raw:
            text = raw
            history = state.recorder.history()
            if state.last_text is not None and history is not None \
                    and raw.startswith(state.last_text):
                prompt = history + self.renderer.encode(raw[len(state.last_text):])
            else:
                prompt = self.renderer.encode(raw)
        else:
            raise RequestError("prompt must be one non-empty string or one list of token ids")
        budget = self._budget(state, prompt, body)
        sample = await self._sample(prompt, budget, self._stop(body))
        state.recorder.add(prompt, sample.token_ids, sample.logprobs, sample.text,
                           sample.finish_reason)
        state.calls += 1
        state.last_chat = None
        state.last_text = None if text is None else text + sample.text
        choice: dict[str, Any] = {"index": 0, "text": sample.text,
                                  "finish_reason": "length" if sample.finish_reason == "length"
                                  else "stop", "logprobs": None}
        return self._answer("text_completion", state, body, prompt, sample, choice)

    def _logprobs(self, sample, body: dict) -> dict | None:
        if not body.get("logprobs") or sample.logprobs is None:
            return None
        tokens = self.renderer.tokenizer.convert_ids_to_tokens(list(sample.token_ids))
        return {"content": [{"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                            for t, lp in zip(tokens, sample.logprobs)]}

    def _answer(self, kind: str, state: _EpisodeState, body: dict, prompt: list[int], sample,
                choice: dict) -> dict:
        answer: dict[str, Any] = {
            "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-"
                  f"{state.recorder.episode_id}-{state.calls}",
            "object": kind, "created": int(time.time()),
            "model": body.get("model") or self.model_name, "choices": [choice],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(sample.token_ids),
                      "total_tokens": len(prompt) + len(sample.token_ids)}}
        if body.get("return_token_ids"):
            answer["prompt_token_ids"] = list(prompt)
            choice["token_ids"] = list(sample.token_ids)
        return answer
