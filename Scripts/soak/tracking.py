"""What the soak counts, and the delivery checks on channel offsets.

Every message the hub publishes on a channel gets the channel's next `halley:offset`
(docs/PROTOCOL.md, "Messages"), so a subscriber can tell a lost message (an offset skipped)
from a duplicate (an offset seen again) without knowing what was published. Two views:

- `Resumable`: a resumable session (`halley:seq`), tracked across its resumes and transport
  switches. It drops a message whose seq is not above the last one processed (what the
  protocol asks of clients: "Clients drop a message whose halley:seq is not greater than the
  last one they processed") and counts it (`seq redelivered`); a seq that skips numbers is
  a lost numbered message (`seq gaps`). After that, every public channel it subscribed to
  must show every offset from its subscription on exactly once: a skipped offset is `lost`,
  a repeated one `duplicated`. These must be 0.
- `Plain`: a Pusher session (WebSocket or pusher-js xhr) that is not resumable. Within one
  connection its offsets must be contiguous too (`plain lost in session`); what it misses
  between two connections (its next subscription starts later) is expected and only counted
  (`plain missed across reconnects`).

`Published` keeps what `POST /publish` answered (channel, epoch, offset, when), for the tail
check: a session that ends must have seen every offset published long enough before.
"""

from __future__ import annotations

import bisect
import collections
import time

C: collections.Counter = collections.Counter()  # every count the soak reports
OPEN: collections.Counter = collections.Counter()  # clients open now, by kind
ERRORS: collections.Counter = collections.Counter()  # unexpected events, by category
ERROR_SAMPLES: dict = {}  # the first few messages of each category
LOSS_SAMPLES: list = []  # the first losses and duplicates, with what was expected


def error(category, detail=""):
    ERRORS[category] += 1
    samples = ERROR_SAMPLES.setdefault(category, [])
    if len(samples) < 5:
        samples.append(f"{time.strftime('%H:%M:%S')} {detail}"[:400])


def loss_sample(text):
    if len(LOSS_SAMPLES) < 40:
        LOSS_SAMPLES.append(f"{time.strftime('%H:%M:%S')} {text}"[:400])


def tracked_channel(ch):
    """Public channels: presence member events take offsets a joiner does not see, and
    client events take none, so only public channels are checked offset by offset."""
    return ch is not None and ch.startswith("soak-")


class Published:
    """Per channel and epoch: the offsets `POST /publish` answered, in order, with the time."""

    def __init__(self):
        self.chans: dict = {}  # channel -> (epoch, [times], [offsets])

    def add(self, ch, epoch, offset, t):
        e = self.chans.get(ch)
        if e is None or e[0] != epoch:
            e = self.chans[ch] = (epoch, [], [])
        e[1].append(t)
        e[2].append(offset)

    def last_before(self, ch, epoch, t):
        """The last offset published on `ch` in `epoch` whose answer came before `t` (0: none)."""
        e = self.chans.get(ch)
        if e is None or e[0] != epoch:
            return 0
        i = bisect.bisect_left(e[1], t)
        return e[2][i - 1] if i else 0

    def last(self, ch, epoch):
        e = self.chans.get(ch)
        if e is None or e[0] != epoch or not e[2]:
            return 0
        return e[2][-1]


PUBLISHED = Published()


class Plain:
    """Offsets seen by one plain Pusher connection (contiguous within it), and what a slot's
    successive connections missed between them."""

    def __init__(self, kind, previous=None, slow=False):
        self.kind = kind
        self.p = "slow " if slow else ""  # a slow consumer's counts are kept apart
        self.next: dict = {}  # channel -> (epoch, next offset)
        self.previous = previous or {}  # channel -> (epoch, last offset) of the slot's last connection

    def on(self, m):
        ev, ch = m.get("event"), m.get("channel")
        if not tracked_channel(ch):
            return
        off = m.get("halley:offset")
        if ev == "pusher_internal:subscription_succeeded":
            epoch = m.get("halley:epoch")
            if off is not None:
                prev = self.previous.get(ch)
                if prev is not None and prev[0] == epoch and off > prev[1]:
                    C["plain missed across reconnects"] += off - prev[1]
                self.next[ch] = (epoch, off + 1)
            return
        if off is None or ev.startswith(("pusher", "halley:")):
            return
        cur = self.next.get(ch)
        if cur is None:
            C[self.p + "plain events before subscription answer"] += 1
            return
        epoch, exp = cur
        if off == exp:
            C[self.p + "plain delivered"] += 1
        elif off > exp:
            C[self.p + "plain lost in session"] += off - exp
            if not self.p:
                loss_sample(f"{self.kind}: {ch} offset {off} after {exp - 1} (lost {off - exp}) on one connection")
        else:
            C[self.p + "plain duplicated in session"] += 1
            if not self.p:
                loss_sample(f"{self.kind}: {ch} offset {off} again (expected {exp})")
            return
        self.next[ch] = (epoch, off + 1)

    def last_seen(self):
        return {ch: (e, n - 1) for ch, (e, n) in self.next.items()}


class Resumable:
    """One resumable session's delivery record, across transports (see the module doc)."""

    def __init__(self, kind, slow=False):
        self.kind = kind
        self.slow = slow  # a slow consumer: cut by the hub on purpose, not checked
        self.last_seq = 0
        self.chans: dict = {}  # channel -> [epoch, next offset or None until subscribed]
        self.pending_since: dict = {}  # channel -> offset given in halley:since

    def prefix(self):
        return "slow " if self.slow else ""

    def new_session(self):
        """The hub started a new session (a failed resume): seqs start again at 1."""
        self.last_seq = 0

    def on(self, m) -> bool:
        """Processes one message; False when it was dropped as a redelivery."""
        seq = m.get("halley:seq")
        p = self.prefix()
        if seq is not None:
            if seq <= self.last_seq:
                C[p + "seq redelivered"] += 1
                return False
            if seq != self.last_seq + 1:
                C[p + "seq gaps"] += 1
                C[p + "seq numbers skipped"] += seq - self.last_seq - 1
                if not self.slow:
                    loss_sample(f"{self.kind}: seq {seq} after {self.last_seq}")
            self.last_seq = seq
        ev, ch = m.get("event"), m.get("channel")
        if not tracked_channel(ch) or ch not in self.chans:
            return True
        off = m.get("halley:offset")
        st = self.chans[ch]
        if ev == "pusher_internal:subscription_succeeded":
            epoch = m.get("halley:epoch")
            since = self.pending_since.pop(ch, None)
            if since is None or st[1] is None:
                st[0], st[1] = epoch, off + 1
            elif m.get("halley:recovered") is True and epoch == st[0]:
                C[p + "recovered from history"] += 1  # history from st[1] follows
            else:
                lost = max(0, off - since) if epoch == st[0] else off
                C[p + "lost: not recovered"] += lost
                C[p + "lost"] += lost
                if not self.slow:
                    loss_sample(f"{self.kind}: {ch} not recovered from {since} "
                                f"({m.get('halley:reason')}, now {off}): {lost} lost")
                st[0], st[1] = epoch, off + 1
            return True
        if off is None or ev.startswith(("pusher", "halley:")):
            if ev == "halley:gap":
                C[p + "gap notices"] += 1
            return True
        exp = st[1]
        if exp is None:
            C[p + "events before subscription answer"] += 1
            return True
        if off == exp:
            C[p + "delivered"] += 1
            st[1] = off + 1
        elif off > exp:
            C[p + "lost"] += off - exp
            if not self.slow:
                loss_sample(f"{self.kind}: {ch} offset {off} after {exp - 1} (seq {seq})")
            st[1] = off + 1
        else:
            C[p + "duplicated"] += 1
            if not self.slow:
                loss_sample(f"{self.kind}: {ch} offset {off} again (expected {exp}, seq {seq})")
        return True

    def tail_check(self, before):
        """Every offset published before `before` (monotonic time; None: every one) must have
        arrived."""
        if self.slow:
            return
        for ch, (epoch, exp) in self.chans.items():
            if exp is None or not tracked_channel(ch):
                continue
            last = PUBLISHED.last(ch, epoch) if before is None else PUBLISHED.last_before(ch, epoch, before)
            if last >= exp:
                C["lost"] += last - exp + 1
                C["lost at the end of a session"] += last - exp + 1
                loss_sample(f"{self.kind}: {ch} ended at offset {exp - 1}, {last} was published before")
            C["tail checks"] += 1
