"""The hostile report in a real browser: headless Chromium (Debian's chromium package).

A capture full of hostile strings (test_report.build_hostile_capture: <script>, onerror
handlers, javascript: URLs, CSS that fetches, </textarea>, <img>/<link>/<iframe>/<meta
refresh>/<base> pointing at a local server, terminal escapes, bytes that are not UTF-8, a
1 MB line) goes through `c2scribe run` (decoders http and a hostile test decoder) and
`c2scribe report`. Chromium renders the report: a screenshot is taken and must be a real
picture, the DOM after load must hold only the report's own elements, the title must still be
the report's (no script ran), and the local HTTP server the hostile markup points at must have
received no request. A control page (a script and an image, no CSP) first proves that this
Chromium runs scripts and that the server sees its requests, so the checks can fail.
"""
from __future__ import annotations

import http.server
import os
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import pytest

from test_report import check_csp, check_inert, make_hostile_output, parse_html

from c2scribe.report import write_report

TITLE = "Hostile report"


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):                                    # noqa: N802 - http.server's name
        self.server.requests.append(self.path)
        body = b"x"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """A local HTTP server that records every request it gets."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def run_chromium(exe: str, profile: Path, url: str, *args: str, timeout: int = 120):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--disable-default-apps",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
           *args, url]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    return r


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct scanlines) of a PNG, with the standard library only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        crc = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        assert zlib.crc32(kind + chunk) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
        pos += 12 + n
    assert ihdr is not None and idat
    w, h, depth, colour = ihdr[:4]
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    stride = 1 + w * channels * depth // 8
    raw = zlib.decompress(idat)
    assert len(raw) == stride * h, "truncated image data"
    rows = {raw[i * stride:(i + 1) * stride] for i in range(h)}
    return w, h, len(rows)


@pytest.fixture(scope="module")
def hostile_page(server, tmp_path_factory) -> Path:
    pytest.importorskip("scapy")
    chromium_path()
    base = tmp_path_factory.mktemp("report-browser")
    out, _h = make_hostile_output(base, server.server_address[1])
    path = base / "report.html"
    write_report(out, path, title=TITLE)
    return path


def test_control_page_shows_the_checks_can_fail(server, tmp_path):
    """Without the report's protections, this Chromium runs a script and fetches an image."""
    exe = chromium_path()
    port = server.server_address[1]
    page = tmp_path / "control.html"
    page.write_text("<!DOCTYPE html><html><head><title>control</title></head><body>"
                    "<script>document.title='RAN'</script>"
                    f'<img src="http://127.0.0.1:{port}/control.png"></body></html>')
    before = len(server.requests)
    r = run_chromium(exe, tmp_path / "profile", page.as_uri(), "--dump-dom")
    root, _ = parse_html(r.stdout.decode())
    assert root.first("title").text() == "RAN"
    assert "/control.png" in server.requests[before:]


def test_hostile_report_in_chromium(server, hostile_page, tmp_path):
    exe = chromium_path()
    port = server.server_address[1]
    page_text = hostile_page.read_text(encoding="utf-8")
    check_csp(page_text)
    server.requests.clear()

    # the DOM after load (and 5 s of virtual time for timers and handlers)
    r = run_chromium(exe, tmp_path / "profile-dom", hostile_page.as_uri(), "--dump-dom")
    dom = r.stdout.decode("utf-8")
    root, tags = parse_html(dom)
    assert root.first("title").text() == TITLE           # no script changed it
    assert "PWNED" not in root.first("title").text()
    check_inert(root, tags, port)                          # nothing hostile became markup
    assert not root.find_all("script") and not root.find_all("img")
    agents = [a.first("h3").text() for a in root.find_all("article", "agent")]
    assert "Agent <script>document.title='PWNED'</script>" in agents   # shown, as text

    # a screenshot: a real picture of a real page
    shot = tmp_path / "report.png"
    run_chromium(exe, tmp_path / "profile-shot", hostile_page.as_uri(),
                 f"--screenshot={shot}", "--window-size=1280,4000")
    w, h, distinct = png_facts(shot)
    assert (w, h) == (1280, 4000)
    assert shot.stat().st_size > 20_000 and distinct > 200, (shot.stat().st_size, distinct)

    # nothing was fetched: the hostile <img>, <link>, <iframe>, <meta refresh>, CSS url()
    # and @import all point at this server
    assert server.requests == [], server.requests
