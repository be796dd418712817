"""A minimal asyncio (aiohttp.web) OpenAI-compatible echo server at a fixed latency, for P3.

Like a real model server's front end (vLLM's is asyncio), one event loop serves every
connection, so 128 requests in flight are 128 sleeping coroutines, not 128 threads taking
turns at one GIL. It parses each body and decodes its data-URL images (base64 and PIL's
header read), as a model server must, and answers with the echo server's reply shape.

    python bench/_echo_async.py --latency 0.2     (prints its port, then serves)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json

from aiohttp import web
from PIL import Image

STATS = {"inflight": 0, "max_inflight": 0, "requests": 0}


async def chat(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    STATS["requests"] += 1
    STATS["inflight"] += 1
    STATS["max_inflight"] = max(STATS["max_inflight"], STATS["inflight"])
    try:
        text = ""
        for m in body["messages"]:
            for part in m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]:
                if part["type"] == "image_url":
                    raw = base64.b64decode(part["image_url"]["url"].partition(",")[2])
                    Image.open(io.BytesIO(raw)).size  # noqa: B018 - the header read a server does
                else:
                    text = part["text"]
        await asyncio.sleep(request.app["latency"])
    finally:
        STATS["inflight"] -= 1
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo: {text}"},
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    return web.json_response(reply)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(STATS)


async def reset(request: web.Request) -> web.Response:
    STATS.update(max_inflight=0, requests=0)
    return web.json_response(STATS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    a = ap.parse_args()
    app = web.Application(client_max_size=64 * 2**20)
    app["latency"] = a.latency
    app.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", stats), web.post("/stats/reset", reset)])

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # noqa: SLF001
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
