"""An OpenAI-compatible chat-completions server for the tests, on 127.0.0.1 with an ephemeral port.

`OpenAIServer` serves POST /v1/chat/completions and GET /v1/models from a stdlib ThreadingHTTPServer in a
background thread. Replies come from a tiny local causal LM (`lm=(model, tokenizer)`, greedy when the request's
temperature is 0), or a `responder(body) -> str` function (scripted text), and faults can be injected:
429s, 5xx, any 4xx with a message, delays (to trigger client timeouts) and malformed JSON bodies. The server
counts attempts, finished replies and the most requests in flight at once, and logs each request's last user
message, so tests check retries, concurrency and caching from the server's side.

`build_tiny_lm(path)` saves a tiny Qwen2 (random weights) with a BPE tokenizer trained on a few hundred
synthetic sentences and a ChatML chat template, loadable with `from_pretrained(path)`.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build_tiny_lm(path, vocab_size: int = 320, seed: int = 0) -> Path:
    """Saves a ~40k-parameter Qwen2 with random weights and a trained byte-level BPE tokenizer (ChatML chat
    template, eos "<|im_end|>", pad "<|endoftext|>") to `path`; returns the path."""
    import tokenizers
    import torch
    import transformers

    path = Path(path)
    words = ["apples", "pears", "Tom", "Sara", "has", "buys", "sells", "how", "many", "left", "total",
             "question", "answer", "final", "each", "box", "holds", "cost", "dollars", "more", "than"]
    texts = [f"{words[i % 21]} {words[(3 * i) % 21]} {i} + {i * 7 % 13} = {i + i * 7 % 13}. "
             f"### Question {words[(5 * i) % 21]} ### Answer {i * 3} ---" for i in range(300)]
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                               pad_token="<|endoftext|>", padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    cfg = transformers.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: "_Server"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: bytes | str | dict, headers: dict | None = None) -> None:
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    def _error(self, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}},
                   headers)

    def do_GET(self):
        owner = self.server.owner
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": owner.model_name, "object": "model"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self):
        owner = self.server.owner
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw)
            messages = body["messages"]
            prompt = messages[-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            self._error(400, "request body is not a chat-completions request")
            return
        with owner.lock:
            owner.attempts += 1
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
            owner.log.append(prompt)
            action = owner._take_fault(prompt)
        try:
            self._serve(owner, body, prompt, action)
        finally:
            with owner.lock:
                owner.in_flight -= 1

    def _serve(self, owner: "OpenAIServer", body: dict, prompt: str, action) -> None:
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._error(401, "Incorrect API key provided")
            return
        if body.get("model") != owner.model_name:
            self._error(404, f"The model `{body.get('model')}` does not exist.")
            return
        text = None
        if action is not None:
            kind = action[0]
            if kind == "delay":
                owner._stop.wait(action[1])
            elif kind == "status":
                status, message = action[1], action[2]
                headers = {"Retry-After": "0"} if status == 429 else None
                self._error(status, message, headers)
                return
            elif kind == "malformed":
                self._send(200, '{"id": "x", "choices": [{"index": 0, "message": {"content": "trunc')
                return
            elif kind == "text":
                text = action[1]
        if owner.delay:
            owner._stop.wait(owner.delay)
        if text is None:
            text = owner._respond(body)
        with owner.lock:
            owner.completed += 1
            owner.completed_log.append(prompt)
        self._send(200, {
            "id": f"chatcmpl-{owner.completed}", "object": "chat.completion", "created": int(time.time()),
            "model": owner.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())}})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "OpenAIServer"


class OpenAIServer:
    """A loopback OpenAI-compatible server (see the module docstring). Use as a context manager.

    lm: (model, tokenizer) to answer with, or None. responder: body -> text, used when given (else the LM,
    else an echo of the last message). model_name: the served name (other names get a 404). api_key: when
    set, requests without "Authorization: Bearer <api_key>" get a 401. delay: seconds every reply waits.
    """

    def __init__(self, lm=None, responder=None, model_name: str = "tiny-test", api_key: str | None = None,
                 delay: float = 0.0):
        self.lm, self.responder, self.model_name, self.api_key, self.delay = lm, responder, model_name, api_key, delay
        self.lock = threading.Lock()
        self._lm_lock = threading.Lock()
        self._stop = threading.Event()
        self._faults: list[dict] = []
        self.reset_counts()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def reset_counts(self) -> None:
        """Zeroes the counters and logs."""
        with self.lock:
            self.attempts = 0          # chat-completions requests received (faulted ones too)
            self.completed = 0         # 200 replies with a completion
            self.in_flight = 0
            self.max_in_flight = 0
            self.log: list[str] = []            # last user message of every request received
            self.completed_log: list[str] = []  # ... of every completed request

    def inject(self, *actions, match: str | None = None, times: int | None = 1) -> None:
        """Queues faults, used in order by the next requests (whose last message contains `match`, if given).

        actions: "429", "500", "503" (any status as a string: an OpenAI-style error body; 4xx get
        "injected client error"), ("status", code, message), "malformed" (a 200 with a truncated JSON body),
        ("delay", seconds) (then a normal reply), ("text", reply) (a scripted reply). times: how many requests
        each action applies to (None: every matching request, for good).
        """
        with self.lock:
            for a in actions:
                if isinstance(a, str) and a.isdigit():
                    a = ("status", int(a), "injected server error" if int(a) >= 500 else
                         "rate limited" if int(a) == 429 else "injected client error")
                elif isinstance(a, str):
                    a = (a,)
                self._faults.append({"action": tuple(a), "match": match, "times": times})

    def clear_faults(self) -> None:
        """Drops the faults not used yet."""
        with self.lock:
            self._faults.clear()

    def _take_fault(self, prompt: str):
        for f in self._faults:
            if f["match"] is None or f["match"] in prompt:
                if f["times"] is not None:
                    f["times"] -= 1
                    if f["times"] <= 0:
                        self._faults.remove(f)
                return f["action"]
        return None

    def _respond(self, body: dict) -> str:
        if self.responder is not None:
            return self.responder(body)
        if self.lm is None:
            return "echo: " + body["messages"][-1]["content"]
        import torch
        model, tok = self.lm
        prompt = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        temperature = float(body.get("temperature", 1.0))
        kwargs = dict(max_new_tokens=int(body.get("max_tokens", 16)), pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=float(body.get("top_p", 1.0)), top_k=0)
        else:
            kwargs.update(do_sample=False)
        with self._lm_lock, torch.no_grad():
            if "seed" in body:
                torch.manual_seed(int(body["seed"]))
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    @property
    def url(self) -> str:
        """The API base, http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "OpenAIServer":
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # ends injected delays
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
