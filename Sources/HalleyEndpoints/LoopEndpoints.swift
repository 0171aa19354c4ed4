import HalleyCore
import HalleyHub
import HalleyLoop
import HalleyServer
import HalleyWebSocket

/// The HTTP layer over the hub (docs/ARCHITECTURE.md, "Modules"): the routes of the Pusher
/// WebSocket path, SSE, long-polling, sending over HTTP, pusher-js's HTTP fallbacks, `POST
/// /publish`, the HTTP API and `/stats`. It calls the domain (`Hub`, `LoopHub`, `Session`),
/// which knows nothing of it. Make one per hub, `install` its routes, then `attach` once the
/// hub has its loops.
public final class HubEndpoints: @unchecked Sendable {
    // Sendable: `loops` is set once by `attach` before the loops run, read-only after.
    public let hub: Hub
    /// One per loop, in the hub's loop order.
    var loops: [LoopEndpoints] = []

    /// The hub's configuration, held here: read through `hub.config` from this module, the
    /// whole struct was copied (and its strings retained) on every access.
    let config: HubConfig

    public init(hub: Hub) {
        self.hub = hub
        self.config = hub.config
    }

    /// Adds the endpoints' state to every loop of the hub. Call right after `Hub.attach`,
    /// before any request can arrive.
    public func attach() {
        loops = hub.loops.map { LoopEndpoints(endpoints: self, loopHub: $0) }
        for l in loops { l.loopHub.add(l) }
    }
}

/// The endpoints' state on one loop: SSE streams, held polls, pusher-js HTTP sessions.
/// Loop-confined.
final class LoopEndpoints: LoopExtension {
    /// Both outlive it (`unowned(unsafe)`: no reference-count check per access).
    unowned(unsafe) let endpoints: HubEndpoints
    unowned(unsafe) let loopHub: LoopHub
    var streams: [SSETransport] = []
    var polls: [PollTransport] = []
    /// Polls that have messages to answer with at the end of this turn.
    var readyPolls: [PollTransport] = []
    /// pusher-js's HTTP fallback sessions (xhr_streaming, xhr), by URL path.
    let pusherHTTP = PusherHTTPSessions()

    init(endpoints: HubEndpoints, loopHub: LoopHub) {
        self.endpoints = endpoints
        self.loopHub = loopHub
        if loopHub.hub.clustered {
            let broker = loopHub.hub.broker
            let index = loopHub.loop.index
            pusherHTTP.onRemove = { path in broker.setPusherSessionOwner(path, node: 0, loop: index) }
        }
    }

    var hub: Hub { loopHub.hub }
    var loop: EventLoop { loopHub.loop }
    var seconds: Int32 { loopHub.seconds }

    // MARK: polls

    func pollReady(_ p: PollTransport) {
        if !p.queuedForAnswer {
            p.queuedForAnswer = true
            readyPolls.append(p)
        }
    }

    // MARK: LoopExtension

    func turnEnded() {
        // An answer can run a pipelined request that readies another poll: loop until none.
        while !readyPolls.isEmpty {
            let ready = readyPolls
            readyPolls.removeAll(keepingCapacity: true)
            for p in ready { p.answer() }
        }
        if !pusherHTTP.readyList.isEmpty { pusherHTTP.answerReady() }
    }

    func tick(now: Int32) {
        if !streams.isEmpty {
            streams.removeAll { !$0.isOpen }
            for st in streams { st.tick(now: now) }
        }
        if !polls.isEmpty {
            polls.removeAll { $0.answered }
            let timeout = Int32(endpoints.config.pollTimeout)
            for p in polls where now - p.since >= timeout { p.answer() }
        }
        if !pusherHTTP.isEmpty { pusherHTTP.tick(now: now) }
    }
}
