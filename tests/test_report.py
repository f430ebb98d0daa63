"""`c2scribe report`: the HTML report of a pipeline output.

On the output of `c2scribe run` for the shared sandcat and njRAT captures: every command is
shown with its output (checked against the c2 dataset read back with Output, not against an
earlier report), the partial download's sha256, the njRAT capture gap; filters restrict the
report; the exit codes and the summary line. On a capture the test builds with hostile strings
(markup, javascript: URLs, CSS, terminal escapes, bidi overrides, bytes that are not UTF-8, a
1 MB line) in URLs, headers, bodies and C2 messages: none of it reaches the HTML as markup,
and the page's CSP hash is its stylesheet's. tests/test_report_browser.py renders the same
hostile report in a real Chromium.

The helpers here (run_pipeline, build_hostile_capture, HOSTILE_DECODER, parse_html) are
shared with the browser test.
"""
from __future__ import annotations

import base64
import hashlib
import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, capture

from c2scribe.cli import main as cli_main
from c2scribe.outputs import Output
from c2scribe.report import build_report, write_report
from c2scribe.report.escape import Budget, bytes_block, esc, text_block
from c2scribe.search import Filters, parse_time

SANDCAT = "corelight-zeek-caldera-detector/testing/Traces/sandcat.pcap"
NJRAT = "keithjjones-zeek-njrat-detector/testing/Traces/njrat.pcap"


# ------------------------------------------------------------------------------ helpers

def run_pipeline(inputs: list[Path], out: Path, *args: str, timeout: int = 300) -> None:
    """`c2scribe run` on inputs (each in its own sensor folder) in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "c2scribe", "run", "--workers", "2",
                        "--progress", "never", "--input", *map(str, inputs),
                        "--output", str(out), *args],
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert r.returncode == 0, f"c2scribe run failed ({r.returncode}):\n{r.stderr[-3000:]}"


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list = []           # Node or str

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list["Node"]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.attrs.get("class", "").split())]

    def first(self, tag: str | None = None, cls: str | None = None) -> "Node | None":
        found = self.find_all(tag, cls)
        return found[0] if found else None


class _TreeBuilder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        self.tags.append((tag, a))
        n = Node(tag, a, self.cur)
        self.cur.children.append(n)
        if tag not in _VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not self.root and n.tag != tag:
            n = n.parent
        if n is not self.root:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse_html(text: str) -> tuple[Node, list[tuple[str, dict]]]:
    """A document tree of an HTML page (stdlib only), and every start tag in order."""
    b = _TreeBuilder()
    b.feed(text)
    b.close()
    return b.root, b.tags


def css_hash(style_text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(style_text.encode()).digest()).decode()


def check_csp(page: str) -> None:
    """One <style>, whose hash the CSP allows; nothing else allowed; no script at all."""
    root, tags = parse_html(page)
    metas = [a for t, a in tags if t == "meta" and
             a.get("http-equiv", "").lower() == "content-security-policy"]
    assert len(metas) == 1
    policy = metas[0]["content"]
    styles = root.find_all("style")
    assert len(styles) == 1
    # the hash is of the element's text exactly as in the file
    raw_style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert f"style-src '{css_hash(raw_style)}'" in policy
    assert "default-src 'none'" in policy and "unsafe" not in policy
    assert "script-src 'none'" in policy and "base-uri 'none'" in policy
    assert not root.find_all("script")
    assert any(t == "meta" and a.get("name") == "referrer" and a.get("content") == "no-referrer"
               for t, a in tags)
    # the CSP comes before anything it must govern
    assert page.index("Content-Security-Policy") < page.index("<style>") < page.index("<body")


# ------------------------------------------------------------------ the shared captures

@pytest.fixture(scope="module")
def shared_out(tmp_path_factory) -> Path:
    sandcat, njrat = capture(SANDCAT), capture(NJRAT)
    base = tmp_path_factory.mktemp("report-shared")
    for sensor, src in (("s1", sandcat), ("s2", njrat)):
        (base / "in" / sensor).mkdir(parents=True)
        shutil.copy(src, base / "in" / sensor / src.name)
    out = base / "out"
    run_pipeline([base / "in" / "s1" / "*", base / "in" / "s2" / "*"], out,
                 "--decoder", "caldera-sandcat", "--decoder", "njrat")
    return out


@pytest.fixture(scope="module")
def shared_report(shared_out, tmp_path_factory) -> tuple[str, dict]:
    path = tmp_path_factory.mktemp("report-html") / "report.html"
    counts = write_report(shared_out, path)
    return path.read_text(encoding="utf-8"), counts


def _cards(root: Node) -> list[Node]:
    """Timeline cards of single messages (not folded check-ins)."""
    return [n for n in root.find_all("div", "card")]


def _expected_text(s: str | None) -> str:
    s = (s or "").replace("\r\n", "\n")
    return s[:-1] if s.endswith("\n") else s


@pytest.mark.shared
def test_every_sandcat_command_is_shown_with_its_output(shared_out, shared_report):
    page, counts = shared_report
    with Output(shared_out) as out:
        rows = out.rows('SELECT "c2scribe.c2.kind" AS kind, "c2scribe.c2.command_id" AS cid, '
                        'message FROM c2 WHERE "c2scribe.decoder.name" = \'caldera-sandcat\' '
                        'AND "c2scribe.c2.command_id" IS NOT NULL')
    commands = {r["cid"]: r["message"] for r in rows if r["kind"] == "command"}
    outputs: dict[str, list[str]] = {}
    for r in rows:
        if r["kind"] == "output":
            outputs.setdefault(r["cid"], []).append(r["message"])
    assert len(commands) == 23 and set(outputs) == set(commands)

    root, _ = parse_html(page)
    shown = {}
    for card in _cards(root):
        head = card.first("div", "head")
        if head is None or head.first("span", "kind").text() != "command":
            continue
        if head.first("span", "cid") is None:            # njRAT has no command ids
            continue
        cid = head.first("span", "cid").text().removeprefix("id ")
        cmd = card.first("pre", "cmd").text()
        replies = [(r.first("span", "cid").text().removeprefix("id "),
                    (r.first("pre", "text").text() if r.first("pre", "text") else ""))
                   for r in card.find_all("div", "reply")]
        shown[cid] = (cmd, replies)
    assert set(shown) >= set(commands)
    for cid, text in commands.items():
        cmd, replies = shown[cid]
        assert cmd == _expected_text(text), cid
        assert [r[0] for r in replies] == [cid] * len(outputs[cid])
        assert sorted(r[1] for r in replies) == sorted(_expected_text(o) for o in outputs[cid])
    # the at-a-glance table lists them all too
    agent = next(a for a in root.find_all("article", "agent")
                 if a.first("h3").text() == "Agent ytbpag")
    glance = agent.first("details", "glance").text()
    assert "23 commands at a glance" in glance
    assert all(_expected_text(c).split("\n")[0] in glance for c in commands.values())
    assert counts["commands"] >= 23 and counts["agents"] >= 2


@pytest.mark.shared
def test_download_attachment_and_its_hash(shared_out, shared_report):
    page, counts = shared_report
    with Output(shared_out) as out:
        rows = out.rows('SELECT "c2scribe.c2.attachments" AS a FROM c2 WHERE '
                        '"c2scribe.c2.kind" = \'download\' AND '
                        '"c2scribe.decoder.name" = \'caldera-sandcat\'')
    import json
    atts = [a for r in rows for a in json.loads(r["a"])]
    assert any(a["name"] == "sandcat.go" for a in atts)
    root, _ = parse_html(page)
    files = next(s for s in root.find_all("section") if s.attrs.get("id") == "files")
    table_text = files.text()
    for a in atts:
        assert a["sha256"] in table_text and a["name"] in table_text
        assert f"{a['size']:,}" in table_text
    assert "partial" in table_text          # the download was cut by capture loss
    # and the njRAT screenshot
    assert "screenshot-1.jpg" in table_text
    assert counts["files"] == 2


@pytest.mark.shared
def test_njrat_gap_is_visible(shared_out, shared_report):
    page, _ = shared_report
    root, _ = parse_html(page)
    with Output(shared_out) as out:
        err = out.rows('SELECT message FROM c2 WHERE "c2scribe.decoder.name" = \'njrat\' AND '
                       '"c2scribe.c2.kind" = \'error\'')
        gap = out.rows('SELECT "c2scribe.tcp.server_to_client.missing_bytes" AS m FROM '
                       'connection WHERE "c2scribe.tcp.server_to_client.missing_bytes" > 0 '
                       'AND "destination.port" = 15145')
    assert err and gap
    agent = next(a for a in root.find_all("article", "agent") if "HacKed" in a.first("h3").text())
    # the decoder's error message, as a red card of the timeline
    errors = [li for li in agent.find_all("li", "k-error")]
    assert len(errors) == 1 and err[0]["message"] in errors[0].text()
    # the connection's missing bytes, in the agent's notes and in the gaps section
    notes = " ".join(li.text() for li in agent.find_all("li", "gap"))
    assert f"{gap[0]['m']:,} bytes missing server→client" in notes
    problems = next(s for s in root.find_all("section") if s.attrs.get("id") == "problems")
    assert f"{gap[0]['m']:,} bytes missing" in problems.text()
    assert err[0]["message"] in problems.text()
    # and the connection still open at the end of the capture
    assert "still open when the capture ended" in agent.text()


@pytest.mark.shared
def test_shared_report_is_self_contained_and_small(shared_report):
    page, counts = shared_report
    check_csp(page)
    assert len(page.encode()) < 2 * 1024 * 1024           # "well under 10 MB"
    root, tags = parse_html(page)
    for t, a in tags:
        assert t not in ("script", "img", "link", "iframe", "object", "embed", "base", "form")
        assert "style" not in a and "src" not in a
        if "href" in a:
            assert a["href"].startswith("#"), a
    # every anchor points at an element of the page
    ids = {a["id"] for _t, a in tags if "id" in a}
    assert {a["href"][1:] for t, a in tags if "href" in a} <= ids
    assert counts["transactions"] == 59 and counts["connections"] == 3


@pytest.mark.shared
def test_caps_say_what_they_leave_out(shared_out, monkeypatch):
    from c2scribe.report import data
    monkeypatch.setattr(data, "MAX_MESSAGES_PER_AGENT", 10)
    monkeypatch.setattr(data, "MAX_TRANSACTIONS", 5)
    monkeypatch.setattr(data, "MAX_CONNECTIONS", 1)
    monkeypatch.setattr(data, "MAX_FILES", 1)
    page, counts = build_report(shared_out)
    root, tags = parse_html(page)
    text = root.text()
    assert "94 later messages of this agent are not shown" in text        # ytbpag: 104
    assert "54 more HTTP transactions not shown" in text
    assert "2 more connections not shown" in text
    assert "1 more files not shown" in text
    # what is not shown is not linked to
    ids = {a["id"] for _t, a in tags if "id" in a}
    assert {a["href"][1:] for t, a in tags if "href" in a} <= ids
    assert counts["transactions"] == 59 and counts["messages"] == 111


@pytest.mark.shared
def test_filter_by_agent(shared_out, tmp_path):
    html_, counts = build_report(shared_out, Filters(agents=["ytbpag"]))
    root, _ = parse_html(html_)
    names = [a.first("h3").text() for a in root.find_all("article", "agent")]
    assert names == ["Agent ytbpag"]
    assert "HacKed_C4BA3647" not in html_ and "sandcat.go" not in html_
    assert counts["agents"] == 1 and counts["connections"] == 1 and counts["files"] == 0
    assert counts["transactions"] == 58
    assert "agent: ytbpag" in root.first("dl", "facts").text()


@pytest.mark.shared
def test_filter_since(shared_out):
    since = "2024-12-18T18:50:00"
    html_, counts = build_report(shared_out, Filters(since_us=parse_time(since)))
    with Output(shared_out) as out:
        want = out.rows('SELECT count(*) AS n FROM c2 WHERE "c2scribe.c2.kind" = \'command\' '
                        'AND "event.start" >= ?::TIMESTAMPTZ', [since + "Z"])[0]["n"]
    assert 0 < want < 23 and counts["commands"] == want
    root, _ = parse_html(html_)
    assert "HacKed_C4BA3647" not in html_           # njRAT is from 2023
    tl = [n.text() for ol in root.find_all("ol", "tl") for n in ol.find_all("time")]
    assert tl and min(tl) >= "18:50:00", tl[:3]
    assert "since 2024-12-18 18:50:00.000 UTC" in html_


@pytest.mark.shared
def test_command_line(shared_out, tmp_path, capsys):
    dest = tmp_path / "r.html"
    assert cli_main(["report", str(shared_out), "-o", str(dest), "--title", "Case 42"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^c2scribe report: wrote .*r\.html \(3 agents, 111 messages, 24 commands"
                     r", 59 HTTP transactions, 3 connections, 2 files; \d+ KiB\)$",
                     err.strip()), err
    page = dest.read_text()
    assert "<title>Case 42</title>" in page
    # not an output, bad filters: exit 2, said plainly, nothing written
    (tmp_path / "empty").mkdir()
    for argv, words in (([str(tmp_path / "empty")], "no c2scribe output"),
                        ([str(tmp_path / "nope")], "no such directory"),
                        ([str(shared_out), "--since", "yesterday"], "not a date"),
                        ([str(shared_out), "--ip", "10.0.0.300"], "not an address")):
        bad = tmp_path / "bad.html"
        assert cli_main(["report", *argv, "-o", str(bad)]) == 2
        assert words in capsys.readouterr().err
        assert not bad.exists()


def test_timeline_marks_pauses_gaps_and_lost_responses(tmp_path):
    """A 15-minute pause, a response cut by capture loss, a request never answered: each is
    marked on the agent's timeline and listed under the gaps."""
    pytest.importorskip("scapy")
    from native_captures import Conv, http_get, http_response
    (tmp_path / "in" / "s").mkdir(parents=True)
    c = Conv(cli=("10.0.0.1", 40000), srv=("10.0.0.2", 80)).handshake()
    c.send("c", http_get("/first"))
    c.send("s", http_response(b"one"))
    c.t += 900                                        # 15 minutes of silence
    c.send("c", http_get("/second"))
    c.send("s", http_response(b"x" * 5000), keep={0, 1, 3})     # segment 2 lost
    c.send("c", http_get("/third"))
    c.close()
    c.write(tmp_path / "in" / "s" / "gaps.pcap")
    run_pipeline([tmp_path / "in" / "s" / "*"], tmp_path / "out", "--decoder", "http")
    page, counts = build_report(tmp_path / "out")
    root, _ = parse_html(page)
    agent = root.first("article", "agent")
    assert agent.first("h3").text() == "Agent 10.0.0.1"
    jumps = agent.find_all("li", "jump")
    assert len(jumps) == 1 and "15 min" in jumps[0].text() and "without messages" in jumps[0].text()
    cards = {li.first("pre", "text").text(): li for li in agent.find_all("li")
             if li.first("pre", "text") is not None}
    second = next(li for t, li in cards.items() if "/second" in t)
    badges = [b.text() for b in second.find_all("span", "badge")]
    assert any("of the response missing" in b for b in badges), badges
    problems = next(s for s in root.find_all("section") if s.attrs.get("id") == "problems")
    assert "/second" in problems.text() and "missing" in problems.text()
    with Output(tmp_path / "out") as out:
        third = out.rows('SELECT "c2scribe.http.state" AS s FROM http WHERE '
                         '"url.original" = \'/third\'')
    assert third and third[0]["s"] != "complete"
    assert "/third" in problems.text() and third[0]["s"].replace("_", " ") in problems.text()
    assert counts["transactions"] == 3


# ------------------------------------------------------------------------- escaping

def test_esc_makes_everything_inert():
    assert esc("<a href=\"x\">'&'</a>") == "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    assert esc("&lt;b&gt;") == "&amp;lt;b&amp;gt;"               # entities stay text
    assert esc(b"ok\xff\xfe") == 'ok<span class="x">\\xff\\xfe</span>'
    assert esc("\x1b[31mred") == '<span class="x">\\x1b</span>[31mred'
    assert esc("a\u202eb\u200bc\u2066d") == ('a<span class="x">\\u202e</span>b'
                                             '<span class="x">\\u200b</span>c'
                                             '<span class="x">\\u2066</span>d')
    assert esc("x\u0085y\U000e0041z") == ('x<span class="x">\\x85</span>y'
                                          '<span class="x">\\U000e0041</span>z')
    assert esc("a\nb\tc") == 'a<span class="x">\\n</span>b<span class="x">\\t</span>c'
    assert esc("a\nb", multiline=True) == "a\nb"
    cut = esc("A" * 5000, 100)
    assert cut.startswith("A" * 100 + '<span class="cut">') and "4,900 more characters" in cut
    # a 1 MB line: the first 2000 characters, and how many more there were
    block = text_block("B" * 1_000_000 + "\nnext", max_chars=8000, line_chars=2000)
    assert len(block) < 3000 and "998,000 more characters on this line" in block
    assert "next" in block


def test_budget_is_charged_what_is_shown():
    """Small bodies cost their size, so a report with many of them does not spend the budget
    on nothing and cut the later ones short."""
    budget = Budget(10_000)
    for _ in range(1_000):
        assert bytes_block(b"ok", total=2, budget=budget) == "ok"
    assert budget.left == 10_000 - 2_000 and not budget.spent
    big = bytes_block(b"x" * 20_000, total=20_000, budget=budget)
    assert big.startswith("x" * 4096) and "15,904 more bytes" in big
    assert budget.left == 10_000 - 2_000 - 4096
    # spent: the next blocks keep the floor of 200 characters
    bytes_block(b"y" * 20_000, total=20_000, budget=budget)
    tail = bytes_block(b"z" * 5_000, total=5_000, budget=budget)
    assert tail.startswith("z" * 200 + "\n") and "4,800 more bytes" in tail


# ------------------------------------------------------------- the hostile capture

HOSTILE_DECODER = '''\
"""A test decoder that turns hostile traffic into hostile C2 messages."""
from c2scribe.decoders import TO_IMPLANT, TO_OPERATOR, Attachment, HttpDecoder, Message

AGENT = "</textarea><img src=x onerror=\\"document.title='PWNED'\\">\\u202e"


def text(b):
    if isinstance(b, str):
        return b
    return (b or b"").decode("utf-8", "backslashreplace")


class Hostile(HttpDecoder):
    name = "hostile-test"
    version = "1"

    def want(self, head):
        return (head.path or "").startswith("/c2")

    def request(self, tx, ctx):
        return [Message("command", TO_IMPLANT, text(tx.request_body), agent=AGENT,
                        command_id="\\"><script>document.title='PWNED'</script>",
                        fields={"<style>": "</pre><script>document.title='PWNED'</script>",
                                "url": "javascript:alert(1)", "esc": "\\x1b[2J\\x1b[31m"})]

    def response(self, tx, ctx):
        return [Message("output", TO_OPERATOR, text(tx.response_body), agent=AGENT,
                        command_id="\\"><script>document.title='PWNED'</script>",
                        attachments=[Attachment("<script>alert(1)</script>\\u202egpj.exe",
                                                b"MZ\\x90\\x00<script>")]),
                Message("error", TO_OPERATOR, "bad \\x1b]0;title\\x07 <b>" + text(tx.uri),
                        agent=AGENT)]
'''


def hostile_strings(port: int) -> dict[str, bytes]:
    base = f"http://127.0.0.1:{port}".encode()
    return {
        "script": b"<script>document.title='PWNED'</script>",
        "img_onerror": b"<img src=x onerror=\"document.title='PWNED'\">",
        "js_url": b"javascript:alert(1)",
        "style": b"<style>body{background:url(" + base + b"/css)}</style>",
        "css_import": b"<style>@import url(" + base + b"/import.css);</style>",
        "textarea": b"</textarea><script>document.title='PWNED'</script>",
        "anchor": b"<a href=\"javascript:document.title='PWNED'\">click</a>",
        "net_img": b"<img src=\"" + base + b"/img\">",
        "link": b"<link rel=\"stylesheet\" href=\"" + base + b"/link.css\">",
        "iframe": b"<iframe src=\"" + base + b"/frame\"></iframe>",
        "meta": b"<meta http-equiv=\"refresh\" content=\"0;url=" + base + b"/refresh\">",
        "base": b"<base href=\"" + base + b"/base/\">",
        "svg": b"<svg onload=\"document.title='PWNED'\"><use href=\"" + base + b"/svg\"/></svg>",
        "comment": b"--><!--<script>document.title='PWNED'</script>",
        "entity": b"&lt;script&gt;",
        "esc": b"\x1b[31mRED\x1b[0m\x1b]0;owned\x07\x1b[2J",
        "bad_utf8": b"\xff\xfe\xc3\x28\xed\xa0\x80\xc0\xaf",
        "bidi": "\u202etxt.exe\u2066\u200b".encode(),
    }


def build_hostile_capture(path: Path, port: int) -> dict[str, bytes]:
    """One HTTP conversation full of hostile strings: in the URI, the headers, the status
    line, the bodies (one of them a 1 MB line), and /c2 exchanges the test decoder turns into
    C2 messages. Returns the strings."""
    from native_captures import Conv, http_response
    h = hostile_strings(port)
    allb = b"\n".join(h.values())
    c = Conv(cli=("10.66.0.5", 41000), srv=("10.66.0.9", 80)).handshake()
    uri = (b"/q?x=" + h["script"] + b"&u=" + h["js_url"] + b"&e=" + h["esc"] + h["bad_utf8"]
           + h["bidi"] + b"&s=" + h["net_img"].replace(b" ", b"%20"))
    req = (b"GET " + uri + b" HTTP/1.1\r\nHost: evil.test\r\n"
           b"X-Forwarded-For: " + h["script"] + b"\r\n"
           b"User-Agent: " + h["img_onerror"] + b"\r\n"
           b"Referer: " + h["js_url"] + b"\r\n"
           b"X-Textarea: " + h["textarea"] + b"\r\n"
           b"X-Style: " + h["style"] + b"\r\n"
           b"X-Esc: " + h["esc"] + h["bad_utf8"] + h["bidi"] + b"\r\n"
           + h["anchor"] + b": " + h["net_img"] + b"\r\n\r\n")
    c.send("c", req)
    body = b"<!DOCTYPE html><html><head>" + allb + b"</head><body>\n" + allb + b"\n</body>"
    c.send("s", b"HTTP/1.1 200 " + h["img_onerror"] + b"\r\nContent-Type: text/html\r\n"
           b"Set-Cookie: " + h["script"] + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    # a 1 MB line, in both directions
    big = b"<b>" + b"A" * 1_000_000 + h["script"] + b"</b>"
    c.send("c", b"POST /big HTTP/1.1\r\nHost: evil.test\r\nContent-Length: %d\r\n\r\n"
           % len(big) + big)
    c.send("s", http_response(big, extra=b"Content-Type: text/html\r\n"))
    # an absolute javascript: URI and a 16 kB one
    c.send("c", b"GET " + h["js_url"] + b" HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    c.send("s", http_response(h["net_img"]))
    c.send("c", b"GET /long?" + b"L" * 16_000 + h["script"] + b" HTTP/1.1\r\nHost: evil.test"
           b"\r\n\r\n")
    c.send("s", http_response(b"ok"))
    # C2 for the test decoder: a command carrying everything, an output with the 1 MB line
    cmd = b"whoami; " + allb
    c.send("c", b"POST /c2?" + h["script"] + b" HTTP/1.1\r\nHost: evil.test\r\n"
           b"Content-Length: %d\r\n\r\n" % len(cmd) + cmd)
    out = allb + b"\n" + big + b"\n" + b"\x00\x01binary\x02" * 10
    c.send("s", http_response(out, extra=b"Content-Type: text/plain\r\n"))
    # binary body: a hexdump
    c.send("c", b"GET /bin HTTP/1.1\r\nHost: evil.test\r\n\r\n")
    c.send("s", http_response(bytes(range(256)) * 4 + h["script"]))
    c.close()
    c.write(path)
    return h


def make_hostile_output(base: Path, port: int) -> tuple[Path, dict[str, bytes]]:
    (base / "in" / "evil").mkdir(parents=True)
    h = build_hostile_capture(base / "in" / "evil" / "hostile.pcap", port)
    dec = base / "hostile_decoder.py"
    dec.write_text(HOSTILE_DECODER)
    out = base / "out"
    run_pipeline([base / "in" / "evil" / "*"], out, "--decoder", "http", "--decoder", str(dec),
                 "--body-keep", "2m")
    return out, h


ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
                "h4", "h5", "p", "nav", "a", "main", "section", "div", "span", "dl", "dt", "dd",
                "b", "i", "table", "thead", "tbody", "tr", "th", "td", "details", "summary",
                "article", "ul", "ol", "li", "pre", "code", "time", "br"}
ALLOWED_ATTRS = {"class", "id", "href", "lang", "charset", "http-equiv", "content", "name",
                 "open", "colspan"}


def check_inert(root: Node, tags: list[tuple[str, dict]], port: int) -> None:
    """No element or attribute that hostile content could have made."""
    for t, a in tags:
        assert t in ALLOWED_TAGS, (t, a)
        assert set(a) <= ALLOWED_ATTRS, (t, a)
        for k, v in a.items():
            assert f"127.0.0.1:{port}" not in v and "javascript" not in v.lower(), (t, a)
            if k == "href":
                assert re.fullmatch(r"#[a-z]+(-[0-9]+)*", v), (t, a)
            if k in ("id", "class"):
                assert re.fullmatch(r"[a-z0-9 -]+", v), (t, a)
    assert len(root.find_all("style")) == 1
    assert len(root.find_all("meta")) == 5


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> tuple[str, dict, dict]:
    pytest.importorskip("scapy")
    base = tmp_path_factory.mktemp("report-hostile")
    out, h = make_hostile_output(base, 9)
    path = base / "report.html"
    counts = write_report(out, path, title="Hostile report")
    return path.read_bytes().decode("utf-8"), counts, h       # strict UTF-8


def test_hostile_content_is_inert_text(hostile_report):
    page, counts, h = hostile_report
    low = page.lower()
    # nothing of it as markup
    assert "<script" not in low and "</textarea" not in low and "<img" not in low
    assert "<iframe" not in low and "<svg" not in low and "<link" not in low
    assert "<base" not in low and low.count("<style") == 1 and low.count("<meta") == 5
    assert "javascript:" not in " ".join(re.findall(r'href="[^"]*"', low))
    assert "\x1b" not in page and "\x07" not in page and "\x00" not in page
    for c in "\u202e\u2066\u200b\ufffd":
        assert c not in page, hex(ord(c))
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", page)
    root, tags = parse_html(page)
    check_inert(root, tags, 9)
    check_csp(page)
    # ... but all of it shown, as text
    text = root.text()
    for key in ("script", "img_onerror", "js_url", "style", "textarea", "anchor", "net_img",
                "meta", "svg", "entity"):
        assert h[key].decode() in text, key
    assert "\\x1b[31mRED\\x1b[0m\\x1b]0;owned\\x07" in text
    assert "\\u202etxt.exe\\u2066\\u200b" in text
    assert "\\xff\\xfe" in text
    # the test decoder's messages: agent, command, output, error, attachment
    agents = [a.first("h3").text() for a in root.find_all("article", "agent")]
    assert "Agent </textarea><img src=x onerror=\"document.title='PWNED'\">\\u202e" in agents
    assert "Agent <script>document.title='PWNED'</script>" in agents    # X-Forwarded-For
    files = next(s for s in root.find_all("section") if s.attrs.get("id") == "files").text()
    assert "script_gpj.exe" in files            # the name as safe_filename carved it
    # the 1 MB line: cut, and said so; no cell anywhere near its size
    assert "more characters" in text
    longest = max(len(s) for n in root.iter() for s in n.children if isinstance(s, str))
    assert longest < 20_000
    assert len(page.encode()) < 3 * 1024 * 1024
    assert counts["agents"] >= 2 and counts["errors"] >= 1 and counts["files"] == 1
