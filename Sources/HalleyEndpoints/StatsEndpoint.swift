import HalleyCore
import HalleyCrypto
import HalleyHub
import HalleyServer

extension HubEndpoints {
    /// Runs a publish handler and adds its time to `halley_publish_handling_seconds`.
    @inline(__always) func timed(_ responder: Responder, _ body: () -> Void) {
        let t0 = Clock.monotonicNanos()
        body()
        hub.publishHandling.observe(nanos: Clock.monotonicNanos() - t0, loop: responder.loopIndex)
    }

    /// `GET /stats` with `Authorization: Bearer <--admin-token>`: every app and the totals.
    func statsEndpoint(_ request: HTTPRequest, _ responder: Responder) {
        guard let admin = config.adminToken else {
            responder.respond(
                HubHTTP.error(
                    403,
                    "GET /stats is off: start the hub with --admin-token (or sign GET /apps/{id}/stats as the HTTP API)"
                ))
            return
        }
        guard let auth = request.head.headers.valueBytes("Authorization"), let token = Self.bearerToken(auth),
            Digest.constantTimeEqual(bytes: token, admin.utf8)
        else {
            Log.info("stats: 401 (no or wrong admin token)")
            var r = HubHTTP.error(401, "GET /stats needs Authorization: Bearer <admin token>")
            r.headers.append(("WWW-Authenticate", "Bearer"))
            responder.respond(r)
            return
        }
        var r = HubHTTP.json(200, hub.statsJSON(only: nil, openConnections: hub.serverMetrics?.openConnectionCount))
        r.headers.append(("Cache-Control", "no-store"))
        responder.respond(r)
    }
}
