"""The helpers of the real-vLLM tests that need no vLLM: the prefix-cache bound, image keys
and the recording proxy (in front of the loopback echo server)."""

from __future__ import annotations

from pixscribe.backends.base import GenerationRequest
from pixscribe.backends.openai_backend import OpenAIBackend
from pixscribe.testing import sample_photo
from pixscribe.testing.openai_server import ServerProcess
from pixscribe.testing.vllm import RecordingProxy, image_keys, prefix_bound


def test_prefix_bound_counts_whole_blocks_of_shared_prefixes_and_never_the_last_token():
    a = list(range(300))
    assert prefix_bound([a], block=128) == 0  # nothing before it
    assert prefix_bound([a, a], block=128) == 256  # 299 reusable tokens: two whole blocks
    assert prefix_bound([a, a[:256]], block=128) == 128  # its last token is always computed
    b = a[:200] + [-1] * 100
    assert prefix_bound([a, b, b], block=128) == 128 + 256  # b shares 200 with a, all but one with b
    assert prefix_bound([a, b], block=16) == 192


def _body(*urls: str) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {"messages": [{"role": "user", "content": parts + [{"type": "text", "text": "x"}]}]}


def test_image_keys_tell_images_of_the_same_size_apart():
    pad = 9
    tokens = [1, 2, pad, pad, 3, pad, pad, 4]
    same, other = image_keys(tokens, _body("A", "B"), pad), image_keys(tokens, _body("A", "C"), pad)
    assert same[:5] == other[:5] and same[5] != other[5] and same[-1] == other[-1] == 4
    assert prefix_bound([same, other], block=2) == 4  # up to the second image
    assert prefix_bound([same, same], block=2) == 6


def test_recording_proxy_keeps_what_was_sent_and_forwards_the_answers():
    with ServerProcess("--mode", "echo", "--model", "m") as srv, RecordingProxy(srv.url.removesuffix("/v1")) as proxy:
        b = OpenAIBackend("m", [proxy.url], concurrency=2)
        assert b.check() == [proxy.url]  # GET /v1/models goes through
        res = b.generate([GenerationRequest.simple("hello", [sample_photo("coffee")]),
                          GenerationRequest.simple("bye")])
        b.close()
    assert res[0].text.startswith("echo: hello") and res[1].text.startswith("echo: bye")
    images = sorted(sum(1 for m in x["messages"] if isinstance(m["content"], list) for p in m["content"]
                        if p.get("type") == "image_url") for x in proxy.bodies)
    assert images == [0, 1]
