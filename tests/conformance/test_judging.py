"""The suite's own rules, on made-up outcomes (no capture needed): strict expectations, the
definitions used to compare (Zeek URI decoding, host matching, multipart files)."""
from __future__ import annotations

from types import SimpleNamespace

import expectations as X
import oracles as O


def _outcome(diffs=(), comparable=True):
    return O.Outcome("c.pcap", "zeek-http-log", comparable=comparable, diffs=list(diffs))


def _holds(ctx):
    return None


def _broken(ctx):
    return "not so"


_holds.__doc__ = "a fact"
_broken.__doc__ = "a fact"


def test_undocumented_difference_fails():
    assert X.judge(_outcome(["a>b#1: uri '/x' != '/y'"]), (), None).status == "fail"


def test_agreement_passes():
    assert X.judge(_outcome(), (), None).status == "pass"


def test_documented_whole_capture_is_xfail_and_strict():
    e = (X.Expect("gap", "hole", (_holds,)),)
    assert X.judge(_outcome(["x"]), e, object()).status == "xfail"
    v = X.judge(_outcome([]), e, object())
    assert v.status == "xpass" and v.test_fails and "unexpectedly passing" in v.reason


def test_reason_that_no_longer_holds_fails():
    e = (X.Expect("gap", "hole", (_broken,)),)
    v = X.judge(_outcome(["x"]), e, object())
    assert v.status == "stale" and v.test_fails


def test_partial_expectation_covers_only_its_differences():
    e = (X.Expect("definition", "0.9", (_holds,), diffs=(r":4656[38]>",)),)
    ok = X.judge(_outcome(["a:46563>b#1: uri", "a:46568>b#1: status"]), e, object())
    assert ok.status == "xfail"
    extra = X.judge(_outcome(["a:46563>b#1: uri", "a:46581>b: no transactions"]), e, object())
    assert extra.status == "fail" and "46581" in extra.reason and "46563" not in extra.reason
    gone = X.judge(_outcome(["a:46581>b: something else"]), e, object())
    assert gone.status == "fail" and "stale" in gone.reason


def test_not_comparable_is_reported_not_judged():
    assert X.judge(_outcome(comparable=False), (), None).status == "not-comparable"


def test_zeek_uri_decoding():
    assert O.zeek_uri("/a%20b/r%FChma+x") == "/a b/rühma+x"        # %FC alone: Latin-1
    assert O.zeek_uri("/%C3%BC") == "/ü"                            # valid UTF-8
    assert O.zeek_uri("/%zz%") == "/%zz%"                           # invalid escapes kept


def test_host_matching():
    t = SimpleNamespace(host_header="Localhost:8080", hostname="localhost")
    assert O.host_matches("Localhost:8080", t)
    assert O.host_matches("localhost", t)
    assert not O.host_matches("other", t)
    assert O.host_matches(None, SimpleNamespace(host_header=None, hostname="x"))


def test_multipart_files():
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"t.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nfile\r\nbytes\r\n--XyZ--\r\n")
    t = SimpleNamespace(request_content_type="multipart/form-data; boundary=XyZ",
                        request_headers=[], request_body=body)
    assert O._multipart_parts(t) == [(None, b"value"), ("t.txt", b"file\r\nbytes")]
