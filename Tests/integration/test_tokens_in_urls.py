"""Session tokens stay out of URLs (issue 18).

A session's token lets whoever holds it resume the session: its already-authorized private and
presence channels, and sending as its client. URLs end up in access logs (a stock nginx logs
every request line), so the token travels in a header (`X-Halley-Token`, `Last-Event-ID`),
the body of `/halley/send`, or a WebSocket's first message (`halley:resume`). The old forms,
the token in the query, are refused unless the hub runs with `--allow-tokens-in-urls`.
"""

from __future__ import annotations

import json

import pytest

from hub_client import SSE, WS, Poll, http_request, publish


def subscribed_poll(h):
    p = Poll(h.port)
    p.subscribe("t")
    assert p.poll(timeout=5)[0]["event"] == "pusher_internal:subscription_succeeded"
    return p


def refusal(status, body):
    j = json.loads(body)
    return status == 400 and j.get("halley:reason") == "token_in_url" and j.get("code") == 4010 and "X-Halley-Token" in j["error"]


def test_tokens_in_urls_are_refused_by_default(start_halley):
    h = start_halley("--app-token", "tok")
    p = subscribed_poll(h)
    # Every old form: the answer says what to do instead, and the session is not touched.
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={p.session}&token={p.token}&cursor={p.cursor}")
    assert refusal(status, body), (status, body)
    status, _, body = http_request(h.port, "POST", f"/halley/send?session={p.session}&token={p.token}",
                                   json.dumps({"event": "pusher:ping", "data": {}}).encode())
    assert refusal(status, body), (status, body)
    s = SSE(h.port, query=f"session={p.session}&token={p.token}&last_seq={p.cursor}")
    assert refusal(s.status, s.resp.read()), s.status
    s.close()
    s = SSE(h.port, query=f"last_event_id={p.cursor}:{p.session}:{p.token}")
    assert refusal(s.status, s.resp.read()), s.status
    s.close()
    ws = WS(h.port, session=p.session, token=p.token, last_seq=p.cursor, token_in_url=True)
    m = ws.recv()
    assert m["event"] == "pusher:error" and m["data"]["code"] == 4010 and "halley:resume" in m["data"]["message"], m
    with pytest.raises(Exception):
        ws.recv()
    assert ws.ws.close_code == 4010
    assert sum("session token in a URL refused" in l for l in h.log_lines()) == 5
    # The session goes on, reached the new ways.
    publish(h.port, {"channel": "t", "event": "e", "data": "still here"})
    assert [m["data"] for m in p.poll(timeout=5)] == ["still here"]


def test_the_new_forms_resume_on_every_transport(start_halley):
    """X-Halley-Token on poll, send and SSE; the token in /halley/send's body; Last-Event-ID;
    halley:resume on WebSocket. None of these requests carries the token in its URL."""
    h = start_halley("--app-token", "tok")
    p = subscribed_poll(h)
    publish(h.port, {"channel": "t", "event": "e", "data": "1"})
    # The body form (what halley.js and sendBeacon use): no header at all.
    status, _, body = http_request(h.port, "POST", f"/halley/send?session={p.session}",
                                   json.dumps({"halley:token": p.token, "messages": [
                                       {"event": "pusher:subscribe", "data": {"channel": "t2"}}]}).encode(),
                                   {"Content-Type": "text/plain;charset=UTF-8"})
    assert status == 200 and json.loads(body) == {"ok": True}, body
    got = p.poll(timeout=5)
    if len(got) < 2:
        got += p.poll(timeout=5)
    assert sorted(m["event"] for m in got) == ["e", "pusher_internal:subscription_succeeded"], got
    last = p.cursor
    # SSE with the header.
    s = SSE(h.port, query=f"session={p.session}&last_seq={last}", token=p.token)
    assert s.status == 200
    est = json.loads(s.recv()["data"])
    assert est["halley:resumed"] is True and est["socket_id"] == p.session
    publish(h.port, {"channel": "t", "event": "e", "data": "2"})
    m = s.recv()
    assert m["data"] == "2"
    s.abort()
    # WebSocket: session and last seq in the URL, the token in the first message.
    ws = WS(h.port, session=p.session, token=p.token, last_seq=m["halley:seq"])
    est = ws.hello()
    assert est["halley:resumed"] is True and est["socket_id"] == p.session
    publish(h.port, {"channel": "t", "event": "e", "data": "3"})
    assert ws.recv()["data"] == "3"
    ws.close()


def test_a_websocket_resume_must_begin_with_halley_resume(start_halley):
    h = start_halley()
    ws = WS(h.port)
    info = ws.hello()
    ws.abort()
    # Something else first: closed 1008, the session untouched.
    other = WS(h.port, session=info["socket_id"], token=None, last_seq=0)
    other.send({"event": "pusher:subscribe", "data": {"channel": "x"}})
    with pytest.raises(Exception):
        other.recv()
    assert other.ws.close_code == 1008
    again = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=0)
    assert again.hello()["halley:resumed"] is True
    again.close()


def test_old_forms_work_with_allow_tokens_in_urls(start_halley):
    h = start_halley("--app-token", "tok", "--allow-tokens-in-urls")
    p = subscribed_poll(h)
    publish(h.port, {"channel": "t", "event": "e", "data": "1"})
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={p.session}&token={p.token}&cursor={p.cursor}")
    j = json.loads(body)
    assert status == 200 and [m["data"] for m in j["messages"]] == ["1"], j
    status, _, body = http_request(h.port, "POST", f"/halley/send?session={p.session}&token={p.token}",
                                   json.dumps({"event": "pusher:ping", "data": {}}).encode())
    assert status == 200, body
    ws = WS(h.port, session=p.session, token=p.token, last_seq=j["cursor"], token_in_url=True)
    assert ws.hello()["halley:resumed"] is True
    ws.close()


def test_a_token_in_the_url_is_refused_even_beside_the_header(start_halley):
    """The URL went to the access log all the same."""
    h = start_halley()
    p = subscribed_poll(h)
    status, _, body = http_request(h.port, "GET", f"/halley/poll?session={p.session}&token={p.token}&cursor={p.cursor}",
                                   headers={"X-Halley-Token": p.token})
    assert refusal(status, body), (status, body)


def test_a_poll_can_carry_its_token_in_a_post_body(start_halley):
    """POST /halley/poll with {"halley:token": T} as text/plain: a simple request (no CORS
    preflight per poll, as a header would need); what halley.js does."""
    h = start_halley("--app-token", "tok")
    p = subscribed_poll(h)
    publish(h.port, {"channel": "t", "event": "e", "data": "by post"})
    status, _, body = http_request(h.port, "POST", f"/halley/poll?session={p.session}&cursor={p.cursor}",
                                   json.dumps({"halley:token": p.token}).encode(), {"Content-Type": "text/plain;charset=UTF-8"})
    j = json.loads(body)
    assert status == 200 and [m["data"] for m in j["messages"]] == ["by post"], (status, j)
    # A wrong token in the body reads as an unknown id.
    status, _, body = http_request(h.port, "POST", f"/halley/poll?session={p.session}&cursor={j['cursor']}",
                                   json.dumps({"halley:token": "0" * 32}).encode(), {"Content-Type": "text/plain;charset=UTF-8"})
    assert status == 404 and json.loads(body)["halley:reason"] == "expired", body


def test_a_websocket_resume_without_its_first_message_closes_after_10_s(start_halley):
    """WebSocketTransport.resumeMessageTimeout: a resume that never shows its token holds its
    connection 10 s at most (1008); the session is not touched."""
    import time
    h = start_halley()
    ws = WS(h.port)
    info = ws.hello()
    ws.subscribe("x")  # a session its client used: it lingers the full 30 s
    ws.abort()
    waiting = WS(h.port, session=info["socket_id"], token=None, last_seq=0)
    t0 = time.monotonic()
    with pytest.raises(Exception):
        waiting.recv(timeout=14)
    took = time.monotonic() - t0
    assert waiting.ws.close_code == 1008 and 9 <= took <= 13, (waiting.ws.close_code, took)
    again = WS(h.port, session=info["socket_id"], token=info["halley:token"], last_seq=0)
    assert again.hello()["halley:resumed"] is True
    again.close()
