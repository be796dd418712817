"""A loopback HTTP server of real photos, for URL inputs: ``/<name>.jpg`` serves
scikit-image's (or matplotlib's) photo ``name`` as a JPEG."""

from __future__ import annotations

import contextlib
import http.server
import io
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator


def photo_jpeg(name: str, quality: int = 85) -> bytes:
    from pixscribe.testing import sample_photo

    b = io.BytesIO()
    sample_photo(name).save(b, "JPEG", quality=quality)
    return b.getvalue()


@dataclass
class PhotoServer:
    url: str
    hits: list[str] = field(default_factory=list)


@contextlib.contextmanager
def photo_server(status: Callable[[str], int | None] | None = None,
                 alias: Callable[[str], str] = lambda n: n) -> Iterator[PhotoServer]:
    """Serve photos; ``status(name)`` may answer an error status instead, ``alias(name)`` maps a
    requested name to the photo served. Unknown photos are 404."""
    srv_info = PhotoServer("")

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            srv_info.hits.append(self.path)
            name = self.path.strip("/").removesuffix(".jpg")
            code = status(name) if status else None
            body = b""
            if code is None:
                try:
                    body = photo_jpeg(alias(name))
                except Exception:  # noqa: BLE001 - not a photo we have
                    code = 404
            self.send_response(code or 200)
            if code is None:
                self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv_info.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv_info
    finally:
        srv.shutdown()
        srv.server_close()
