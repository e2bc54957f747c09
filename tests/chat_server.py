"""A real OpenAI-compatible chat-completions server on loopback that misbehaves on purpose.

Each (prompt, seed) is answered by the world LLM; the first attempts of chosen seeds
get a 429, a 500, a body that is not JSON, a hang longer than the client's timeout,
or a dropped connection. The server counts every request and every success per key,
so tests can check that nothing was lost and nothing asked twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from synth2.world.llm import WorldLLM
from synth2.world.scene import WorldConfig, WorldSpec

FAULTS = ("429", "500", "malformed", "timeout", "drop")


class ChatServer:
    def __init__(self, faulty_every: int = 3, timeout_sleep: float = 1.5, delay: float = 0.0, answer=None, retry_after: float | None = None):
        # answer(prompt, seed) -> caption; the world LLM unless given
        self.answer = answer or WorldLLM(WorldSpec(WorldConfig(), 0), noise=0.0).complete
        self.faulty_every, self.timeout_sleep, self.delay = faulty_every, timeout_sleep, delay
        self.retry_after = retry_after  # seconds a 429 asks the client to wait (a Retry-After header)
        self.times: list[float] = []  # when each request arrived (time.monotonic)
        self.attempts: Counter = Counter()
        self.successes: Counter = Counter()
        self.faults: Counter = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt, seed = body["messages"][-1]["content"], body.get("seed", 0)
                key = (prompt, seed)
                with server.lock:
                    server.times.append(time.monotonic())
                    server.attempts[key] += 1
                    attempt = server.attempts[key]
                fault = FAULTS[(seed // server.faulty_every) % len(FAULTS)] if server.faulty_every and seed % server.faulty_every == 0 and attempt == 1 else None
                if fault:
                    with server.lock:
                        server.faults[fault] += 1
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "timeout":  # hang past the client's timeout, then give up without answering
                    time.sleep(server.timeout_sleep)
                    return
                if fault in ("429", "500"):
                    headers = {"Retry-After": str(server.retry_after)} if fault == "429" and server.retry_after is not None else {}
                    self._send(int(fault), {"error": {"message": f"injected {fault}", "type": "server_error"}}, headers)
                    return
                if fault == "malformed":
                    self._send_raw(200, b"{this is not json")
                    return
                time.sleep(server.delay)
                text = server.answer(prompt, seed)
                with server.lock:
                    server.successes[key] += 1
                self._send(200, {
                    "id": f"chatcmpl-{seed}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status, payload, headers=None):
                self._send_raw(status, json.dumps(payload).encode(), headers)

            def _send_raw(self, status, data, headers=None):
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
