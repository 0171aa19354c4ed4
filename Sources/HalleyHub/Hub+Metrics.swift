import HalleyCore
import HalleyServer

/// The hub's part of `/metrics`.
extension Hub {
    /// Adds the hub's gauges to `/metrics`.
    public func addMetrics(to metrics: Metrics) {
        serverMetrics = metrics
        metrics.addSource { [self] in metricsText() }
    }

    /// The hub's part of `/metrics` (every family is listed in the README).
    func metricsText() -> String {
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, Int)]) {
            out += Metrics.family(name, type, help, samples)
        }
        family(
            "halley_sessions", "gauge", "Sessions on this node, live and lingering.",
            [("", sessionCount.load(ordering: .relaxed))])
        family(
            "halley_channels", "gauge", "Channels known to this node (with subscribers, history or a cached message).",
            [("", channelCount)])
        let table = apps
        let census = censusByApp()
        let channels = channelTotalsByApp()
        let ids = table.apps.map(\.id)
        family(
            "halley_app_connections", "gauge",
            "Sessions with a transport attached, by app and transport (counted each second).",
            ids.flatMap { id in
                TransportKind.allCases.map { k in
                    ("{app=\"\(id)\",transport=\"\(k.name)\"}", census[id]?.byTransport[k.rawValue] ?? 0)
                }
            })
        family(
            "halley_app_sessions", "gauge",
            "Sessions by app and state: live (a transport attached) or lingering (waiting for the client to resume).",
            ids.flatMap { id in
                [
                    ("{app=\"\(id)\",state=\"live\"}", census[id]?.live ?? 0),
                    ("{app=\"\(id)\",state=\"lingering\"}", census[id]?.lingering ?? 0),
                ]
            })
        family(
            "halley_app_channels", "gauge", "Channels with subscribers, by app.",
            ids.map { ("{app=\"\($0)\"}", channels[$0]?.channels ?? 0) })
        family(
            "halley_app_subscriptions", "gauge", "Channel subscriptions, by app.",
            ids.map { ("{app=\"\($0)\"}", channels[$0]?.subscriptions ?? 0) })
        let help: [AppCounter: String] = [
            .messagesIn: "Messages published into channels (one per channel), client events included, by app.",
            .messagesOut: "Messages handed to subscribers' transports, by app.",
            .sessionsOpened: "Sessions opened, by app.",
            .resumes: "Sessions a client came back to on a new connection (WebSocket or SSE resume), by app.",
            .fallbacks: "Sessions that opened on or moved to an HTTP transport (SSE, long-poll, xhr), by app.",
            .gaps:
                "Gap notices: messages a session missed (slow consumer with policy gap, or history that could not cover a recovery), by app.",
            .slowConsumers: "Sessions that hit their buffer bound (closed 4100, or skipping with policy gap), by app.",
        ]
        for k in AppCounter.allCases {
            family(
                "halley_app_\(k.name)_total", "counter", help[k]!,
                ids.map { ("{app=\"\($0)\"}", table.stats[$0]?.get(k) ?? 0) })
        }
        out += broker.metricsText()
        family(
            "halley_forwarded_requests_total", "counter",
            "Requests of an HTTP session owned by another node (long-poll, SSE, /halley/send), relayed to it.",
            [("", forwardedRequests.load(ordering: .relaxed))])
        out += deliveryLatency.render(
            name: "halley_delivery_latency_seconds",
            help: "From a publish accepted to its message handed to a loop's subscribers, per message and loop.")
        out += publishHandling.render(
            name: "halley_publish_handling_seconds",
            help:
                "Time in the hub handling one publish request (POST /publish, the HTTP API's events and batch_events): checks, encoding, fan-out hand-off, the answer."
        )
        if let w = webhooks {
            family(
                "halley_webhook_events_queued", "gauge", "Webhook events waiting to be sent.",
                [("", w.inbox.withLock { $0.events.count } + webhookQueued.load(ordering: .relaxed))])
            out += w.metricsText()
        }
        return out
    }

    /// Channels known to the node (for metrics and tests).
    public var channelCount: Int { shards.reduce(0) { n, s in n + s.withLock { $0.channels.count } } }
}
