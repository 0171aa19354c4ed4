import HalleyCore
import HalleyHub
import HalleyHTTP
import HalleyProtocol
import HalleyServer

/// The Pusher Channels HTTP API ("HTTP API reference") under `/apps/{app_id}/`: events,
/// batch events, channel queries and user termination, signed exactly as the official server
/// SDKs sign. Errors are Pusher's: plain-text bodies with 400, 401, 403, 404 and 413.
extension HubEndpoints {
    func installPusherAPI(on router: Router) {
        router.add([.post], "/apps/{app}/events") { [self] rq, rs in
            timed(rs) { apiAnswering(rq, rs) { $0.events($1, $2) } }
        }
        router.add([.post], "/apps/{app}/batch_events") { [self] rq, rs in
            timed(rs) { apiAnswering(rq, rs) { $0.batchEvents($1, $2) } }
        }
        router.add([.get], "/apps/{app}/stats") { [self] rq, rs in
            api(rq, rs) { .success($0.hub.statsJSON(only: $1.app.id, openConnections: nil)) }
        }
        router.add([.get], "/apps/{app}/channels") { [self] rq, rs in
            apiAnswering(rq, rs) { endpoints, r, answer in
                guard endpoints.hub.clustered else { return answer(endpoints.channelsInfo(r)) }
                let prefix = Query.value(r.query, "filter_by_prefix") ?? ""
                endpoints.hub.broker.occupiedChannels(app: r.app.id, prefix: prefix, loop: r.loop) { list in
                    guard let list else {
                        return answer(.failure(Refusal(status: 503, text: "Redis did not answer; retry")))
                    }
                    answer(endpoints.channelsInfo(r, cluster: list))
                }
            }
        }
        router.add([.get], "/apps/{app}/channels/{channel}") { [self] rq, rs in
            apiAnswering(rq, rs) { endpoints, r, answer in
                endpoints.clusterUsers(r) { users in
                    endpoints.clusterSubscriptions(r) { subs in
                        answer(endpoints.channelInfo(r, clusterUsers: users, clusterSubscriptions: subs))
                    }
                }
            }
        }
        router.add([.get], "/apps/{app}/channels/{channel}/users") { [self] rq, rs in
            apiAnswering(rq, rs) { endpoints, r, answer in
                endpoints.clusterUsers(r) { users in answer(endpoints.channelUsers(r, clusterUsers: users)) }
            }
        }
        router.add([.post], "/apps/{app}/users/{user}/terminate_connections") { [self] rq, rs in
            apiAnswering(rq, rs) { $0.terminateUser($1, $2) }
        }
        // pusher-http-python 3.3.4 sends `terminate_user_connections` without the `/apps/{id}`
        // prefix (and signs that path): the app is the one of `auth_key`.
        router.add([.post], "/users/{user}/terminate_connections") { [self] rq, rs in
            apiAnswering(rq, rs) { $0.terminateUser($1, $2) }
        }
    }

    /// A signed API request of one app.
    struct APIRequest {
        let app: App
        let request: HTTPRequest

        /// The query's parameters (parsed when asked for: a publish does not ask).
        var query: [(String, String)] { Query.parse(request.head.query) }

        /// The loop the request came on (a publish is answered there).
        let loop: Int

        func parameter(_ name: String) -> String? { request.parameters[name] }
    }

    /// Pusher's error answer: a line of plain text.
    static func apiError(_ status: Int, _ text: String) -> HTTPResponse {
        HTTPResponse(
            status: status, headers: [("Content-Type", "text/plain; charset=utf-8")],
            body: .bytes(Array((text + "\n").utf8)))
    }

    /// 200 with a JSON body (its header line encoded once, `HubHTTP.json`).
    static func apiOK(_ body: [UInt8]) -> HTTPResponse { HubHTTP.json(200, body) }

    /// `{}`, the answer of most API requests (made once).
    static let emptyObject: [UInt8] = Array("{}".utf8)

    /// Finds the app, checks the signature (over the path as sent) and that the app is
    /// enabled, then runs `body`, which answers.
    func api(
        _ request: HTTPRequest, _ responder: Responder, _ body: (HubEndpoints, APIRequest) -> Result<[UInt8], Refusal>
    ) {
        apiAnswering(request, responder) { endpoints, r, answer in answer(body(endpoints, r)) }
    }

    /// `api` for a handler that answers later (a publish waits for the broker).
    func apiAnswering(
        _ request: HTTPRequest, _ responder: Responder,
        _ body: (HubEndpoints, APIRequest, @escaping (Result<[UInt8], Refusal>) -> Void) -> Void
    ) {
        let path = String(request.head.path)
        let app: App
        if let id = request.parameters["app"] {
            guard let a = hub.app(id: id) else {
                Log.info("api \(path): 404 unknown app")
                responder.respond(Self.apiError(404, "Unknown app id \(id.prefix(40))"))
                return
            }
            app = a
        } else {
            guard let k = Query.value(Query.parse(request.head.query), "auth_key"), let a = hub.app(key: k) else {
                Log.info("api \(path): 401 unknown auth_key")
                responder.respond(Self.apiError(401, "Unknown auth_key"))
                return
            }
            app = a
        }
        do {
            _ = try PusherSignature.verify(
                method: request.method.description, path: path, rawQuery: request.head.query, body: request.body,
                now: Clock.wallSeconds(), secretsFor: { $0 == app.key ? app.secrets(now: Clock.wallSeconds()) : [] })
        } catch {
            Log.info("api \(path): 401 \(error)")
            responder.respond(
                Self.apiError(
                    401,
                    Self.signatureText(
                        error, app: app, method: request.method.description, path: path,
                        query: Query.parse(request.head.query))))
            return
        }
        guard app.enabled else {
            Log.info("api \(path): 403 app \(app.id) disabled")
            responder.respond(Self.apiError(403, "App \(app.id) is disabled"))
            return
        }
        body(self, APIRequest(app: app, request: request, loop: responder.loopIndex)) { result in
            switch result {
            case .success(let b):
                responder.respond(Self.apiOK(b))
            case .failure(let e):
                Log.info("api \(path): \(e.status) \(e.text)")
                var r = Self.apiError(e.status, e.text)
                if e.status == 503 { r.headers.append(("Retry-After", "1")) }
                responder.respond(r)
            }
        }
    }

    /// Pusher's explanation of a refused signature (what to sign; never the expected value).
    static func signatureText(
        _ f: PusherSignature.Failure, app: App, method: String, path: String, query: [(String, String)]
    ) -> String {
        switch f {
        case .unknownKey: return "Unknown auth_key"
        case .badSignature:
            let s = PusherSignature.stringToSign(method: method, path: path, query: query).split(
                separator: "\n", omittingEmptySubsequences: false
            ).joined(separator: "\\n")
            return
                "Invalid signature: you should have sent HmacSHA256Hex(\"\(s)\", your_secret_key), but you sent \"\(Query.value(query, "auth_signature") ?? "")\""
        case .expired: return "Timestamp expired: " + f.description
        default: return f.description
        }
    }

    // MARK: events

    /// One event of `events` or `batch_events`, validated.
    struct APIEvent {
        var channels: [String]
        var name: String
        var data: String
        var exclude: SessionID?
        var info: Set<String>
    }

    /// The event's fields, checked (thrown, not a `Result`: a `Result` of this struct was
    /// destroyed through generic value witnesses).
    func parseAPIEvent(_ o: some JSONMembers, app: App, batch: Bool) throws(Refusal) -> APIEvent {
        func bad(_ t: String) -> Refusal { Refusal(status: 400, text: t) }
        guard let name = o["name"]?.string, !name.isEmpty else {
            throw bad("Expected name parameter to be a non-empty string")
        }
        let data: String
        switch o["data"] {
        case .string(let s)?: data = s
        case nil: throw bad("Expected data parameter to be a string")
        case let v?: data = String(decoding: v.serialized, as: UTF8.self)
        }
        var channels: [String] = []
        if let c = o["channel"] {
            guard let s = c.string else { throw bad("Expected channel parameter to be a string") }
            channels.append(s)
        }
        if let cs = o["channels"] {
            guard !batch else { throw bad("batch events take one channel each") }
            guard let a = cs.array, a.allSatisfy({ $0.string != nil }) else {
                throw bad("Expected channels parameter to be an array of strings")
            }
            channels += a.map { $0.string! }
        }
        guard !channels.isEmpty else { throw bad("Missing channel or channels parameter") }
        guard channels.count <= config.maxChannelsPerPublish else {
            throw bad("Too many channels: at most \(config.maxChannelsPerPublish) per event")
        }
        if channels.count > 1 {  // one channel (the common case) makes no set
            var seen = Set<String>()
            channels = channels.filter { seen.insert($0).inserted }
        }
        for c in channels {
            if let p = Self.apiChannelProblem(c) { throw bad("\(p): '\(c.prefix(200))'") }
        }
        if channels.count > 1, channels.contains(where: { $0.hasPrefix("private-encrypted-") }) {
            throw bad("Encrypted channels take one channel per event")
        }
        if let p = config.eventProblem(app: app, name: name, dataBytes: data.utf8.count) {
            throw Refusal(status: p.status, text: p.text)
        }
        var exclude: SessionID? = nil
        if let x = o["socket_id"] {
            guard let s = x.string, let id = SessionID(s) else {
                throw bad("Invalid socket_id: expected digits.digits")
            }
            exclude = id
        }
        var info = Set<String>()
        if let i = o["info"] {
            guard let s = i.string else { throw bad("Expected info parameter to be a comma-separated string") }
            info = Set(s.split(separator: ",").map { String($0).trimmingSpaces() })
            for a in info where a != "user_count" && a != "subscription_count" {
                throw bad("Unknown info attribute '\(a.prefix(40))'")
            }
        }
        return APIEvent(channels: channels, name: name, data: data, exclude: exclude, info: info)
    }

    /// Channel names the API may publish to: the client names, and `#server-to-user-ID`
    /// (events to a signed-in user).
    static func apiChannelProblem(_ c: String) -> String? {
        if c.hasPrefix(LoopHub.userChannelPrefix) {
            let user = String(c.dropFirst(LoopHub.userChannelPrefix.count))
            if user.isEmpty || user.utf8.count > PresenceMember.maxUserIDLength { return "Invalid user id" }
            return nil
        }
        return ChannelName.problem(c)
    }

    /// The members of an `events` body that `parseAPIEvent` reads, found in one pass
    /// (`JSONParser.readObject`; this runs for every published event). The last of a
    /// repeated key counts, as in `JSONFields`; a key not among `keys` is looked up in the
    /// body parsed again (slower, never wrong).
    struct EventMembers: JSONMembers {
        static let keys: [StaticString] = ["name", "data", "channel", "channels", "socket_id", "info"]
        var name, data, channel, channels, socketID, info: JSONValue?
        let body: [UInt8]

        /// nil when the body is not JSON, or not an object.
        init?(_ body: [UInt8]) {
            var m = EventMembers(body: body)
            guard
                (try? JSONParser.readObject(
                    body, keys: Self.keys,
                    { k, v in
                        switch k {
                        case 0: m.name = v
                        case 1: m.data = v
                        case 2: m.channel = v
                        case 3: m.channels = v
                        case 4: m.socketID = v
                        case 5: m.info = v
                        default: break
                        }
                    })) == true
            else { return nil }
            self = m
        }

        private init(body: [UInt8]) { self.body = body }

        /// By the key's length first: a `switch` over the six names compared the key with each
        /// one before it, and a string comparison that fails is the slow one (about 600
        /// instructions per event for `parseAPIEvent`'s six lookups).
        subscript(_ key: String) -> JSONValue? {
            switch key.utf8.count {
            case 4:
                if key == "name" { return name }
                if key == "data" { return data }
                if key == "info" { return info }
            case 7: if key == "channel" { return channel }
            case 8: if key == "channels" { return channels }
            case 9: if key == "socket_id" { return socketID }
            default: break
            }
            return (try? JSONParser.parseFields(body))?[key]
        }
    }

    func events(_ r: APIRequest, _ answer: @escaping (Result<[UInt8], Refusal>) -> Void) {
        guard let o = EventMembers(r.request.body) else {
            return answer(.failure(Refusal(status: 400, text: "Expected a JSON object body")))
        }
        let e: APIEvent
        do { e = try parseAPIEvent(o, app: r.app, batch: false) } catch { return answer(.failure(error)) }
        func finish(_ result: Result<Hub.PublishResult, RedisError>) {
            if case .failure(let f) = result { return answer(.failure(Self.notPublished(f))) }
            guard !e.info.isEmpty else { return answer(.success(Self.emptyObject)) }
            var chans = JSONObjectBuilder()
            for c in e.channels { chans.raw(c, counts(ChannelKey(app: r.app.id, name: c), e.info)) }
            var b = JSONObjectBuilder()
            b.raw("channels", chans.closed)
            answer(.success(b.closed))
        }
        // The memory broker answers at once, without a closure made for the answer.
        if let done = hub.publishNow(
            app: r.app, channels: e.channels, event: e.name, data: e.data, binary: nil, exclude: e.exclude)
        {
            return finish(.success(done))
        }
        hub.publish(
            app: r.app, channels: e.channels, event: e.name, data: e.data, binary: nil, exclude: e.exclude,
            loop: r.loop, then: finish)
    }

    /// The API's 503: the broker (Redis) could not take the event.
    static func notPublished(_ e: RedisError) -> Refusal {
        Refusal(status: 503, text: "Not published: \(e); retry")
    }

    func batchEvents(_ r: APIRequest, _ answer: @escaping (Result<[UInt8], Refusal>) -> Void) {
        guard let o = parseBody(r.request.body), let list = o["batch"]?.array else {
            return answer(.failure(Refusal(status: 400, text: "Expected a JSON object with a batch array")))
        }
        guard list.count <= config.maxBatchEvents else {
            return answer(
                .failure(
                    Refusal(
                        status: 400, text: "Batch too large: at most \(config.maxBatchEvents) events per request")))
        }
        // All or nothing: every event is checked before any is published.
        var events: [APIEvent] = []
        for (i, v) in list.enumerated() {
            guard let eo = v.object else {
                return answer(.failure(Refusal(status: 400, text: "batch[\(i)] must be a JSON object")))
            }
            do { events.append(try parseAPIEvent(eo, app: r.app, batch: true)) } catch {
                return answer(.failure(Refusal(status: error.status, text: "batch[\(i)]: \(error.text)")))
            }
        }
        // Answered when every event has its answer: 503 when any could not be published (those
        // that were stay published: the batch is checked as a whole, not published as one).
        var left = events.count
        var failure: RedisError? = nil
        let finish: () -> Void = { [self] in
            if let f = failure { return answer(.failure(Self.notPublished(f))) }
            guard events.contains(where: { !$0.info.isEmpty }) else { return answer(.success(Self.emptyObject)) }
            var out: [UInt8] = Array(#"{"batch":["#.utf8)
            for (i, e) in events.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out +=
                    e.info.isEmpty ? Self.emptyObject : counts(ChannelKey(app: r.app.id, name: e.channels[0]), e.info)
            }
            out += Array("]}".utf8)
            answer(.success(out))
        }
        if events.isEmpty { return finish() }
        for e in events {
            hub.publish(
                app: r.app, channels: e.channels, event: e.name, data: e.data, binary: nil, exclude: e.exclude,
                loop: r.loop
            ) { result in
                if case .failure(let f) = result, failure == nil { failure = f }
                left -= 1
                if left == 0 { finish() }
            }
        }
    }

    func parseBody(_ body: [UInt8]) -> [String: JSONValue]? {
        (try? JSONParser.parse(body))?.object
    }

    /// `{"user_count":N,"subscription_count":M}` with the attributes asked for that apply
    /// to the channel's kind.
    func counts(_ key: ChannelKey, _ info: Set<String>) -> [UInt8] {
        let c = hub.occupancy(key)
        let (subs, users) = (c.subscriptions, c.users)
        var b = JSONObjectBuilder()
        let presence = ChannelName.kind(key.name) == .presence
        // Pusher: user_count for presence channels, subscription_count for the others.
        if info.contains("user_count") && presence { b.int("user_count", UInt64(users)) }
        if info.contains("subscription_count") && !presence { b.int("subscription_count", UInt64(subs)) }
        return b.closed
    }

    // MARK: channels

    func infoAttributes(_ q: [(String, String)], allowed: Set<String>) -> Result<Set<String>, Refusal> {
        guard let s = Query.value(q, "info") else { return .success([]) }
        let set = Set(s.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty })
        for a in set where !allowed.contains(a) {
            return .failure(Refusal(status: 400, text: "Unknown info attribute '\(a.prefix(40))'"))
        }
        return .success(set)
    }

    /// `cluster`: with Redis, the cluster's occupied channels and counts.
    func channelsInfo(
        _ r: APIRequest, cluster: [(name: String, subscriptions: Int, users: Int)]? = nil
    ) -> Result<[UInt8], Refusal> {
        let q = r.query  // parsed once
        let prefix = Query.value(q, "filter_by_prefix") ?? ""
        let info: Set<String>
        switch infoAttributes(q, allowed: ["user_count", "subscription_count"]) {
        case .failure(let f): return .failure(f)
        case .success(let i): info = i
        }
        if info.contains("user_count") && !prefix.hasPrefix("presence-") {
            return .failure(
                Refusal(
                    status: 400,
                    text: "user_count may only be requested for presence channels: add filter_by_prefix=presence-"))
        }
        if info.contains("subscription_count") && prefix.hasPrefix("presence-") {
            return .failure(
                Refusal(status: 400, text: "subscription_count is not available for presence channels: use user_count"))
        }
        var chans = JSONObjectBuilder()
        let list =
            cluster
            ?? hub.occupiedChannels(app: r.app.id, prefix: prefix).map {
                (name: $0.name, subscriptions: $0.counts.subscriptions, users: $0.counts.users)
            }
        for c in list where !c.name.hasPrefix(LoopHub.userChannelPrefix) {
            var b = JSONObjectBuilder()
            if info.contains("user_count") { b.int("user_count", UInt64(c.users)) }
            if info.contains("subscription_count") { b.int("subscription_count", UInt64(c.subscriptions)) }
            chans.raw(c.name, b.closed)
        }
        var b = JSONObjectBuilder()
        b.raw("channels", chans.closed)
        return .success(b.closed)
    }

    /// With Redis, a presence channel's users are the cluster's (`.some(nil)`: Redis did not
    /// answer); nil: this node's.
    func clusterUsers(_ r: APIRequest, _ then: @escaping ([String]??) -> Void) {
        let name = r.parameter("channel") ?? ""
        guard hub.clustered, ChannelName.kind(name) == .presence, ChannelName.problem(name) == nil else {
            return then(nil)
        }
        hub.broker.presenceUsers(ChannelKey(app: r.app.id, name: name), loop: r.loop) { then(.some($0)) }
    }

    /// With Redis, a channel's subscriptions are the cluster's (`.some(nil)`: Redis did not
    /// answer); nil: this node's.
    func clusterSubscriptions(_ r: APIRequest, _ then: @escaping (Int??) -> Void) {
        let name = r.parameter("channel") ?? ""
        guard hub.clustered, ChannelName.kind(name) != .presence, ChannelName.problem(name) == nil else {
            return then(nil)
        }
        hub.broker.subscriptions(ChannelKey(app: r.app.id, name: name), loop: r.loop) { then(.some($0)) }
    }

    func channelInfo(
        _ r: APIRequest, clusterUsers: [String]?? = nil, clusterSubscriptions: Int?? = nil
    ) -> Result<[UInt8], Refusal> {
        let name = r.parameter("channel") ?? ""
        if let p = ChannelName.problem(name) {
            return .failure(Refusal(status: 400, text: "\(p): '\(name.prefix(200))'"))
        }
        let info: Set<String>
        switch infoAttributes(r.query, allowed: ["user_count", "subscription_count", "cache"]) {
        case .failure(let f): return .failure(f)
        case .success(let i): info = i
        }
        let kind = ChannelName.kind(name)
        if info.contains("user_count") && kind != .presence {
            return .failure(Refusal(status: 400, text: "user_count is only available for presence channels"))
        }
        if info.contains("subscription_count") && kind == .presence {
            return .failure(
                Refusal(status: 400, text: "subscription_count is not available for presence channels: use user_count"))
        }
        if info.contains("cache") && kind != .cache {
            return .failure(Refusal(status: 400, text: "cache is only available for cache channels"))
        }
        let key = ChannelKey(app: r.app.id, name: name)
        let (c, cachedMessage) = hub.occupancyAndCache(key)
        var subs = c.subscriptions
        var users = c.users
        if let cluster = clusterSubscriptions {
            guard let n = cluster else { return .failure(Refusal(status: 503, text: "Redis did not answer; retry")) }
            subs = n
        }
        if let cluster = clusterUsers {
            guard let ids = cluster else { return .failure(Refusal(status: 503, text: "Redis did not answer; retry")) }
            users = ids.count
        }
        // The data string is read back outside the shard's lock.
        let cached = cachedMessage.map { (Self.dataField($0.0), $0.ttl) }
        var b = JSONObjectBuilder()
        b.bool("occupied", subs > 0 || users > 0)  // with Redis, a presence channel's members may be elsewhere
        if info.contains("user_count") { b.int("user_count", UInt64(users)) }
        if info.contains("subscription_count") { b.int("subscription_count", UInt64(subs)) }
        if info.contains("cache") {
            if let (data, ttl) = cached {
                var c = JSONObjectBuilder()
                c.string("data", data)
                c.int("ttl", UInt64(ttl))
                b.raw("cache", c.closed)
            } else {
                b.raw("cache", Array("null".utf8))
            }
        }
        return .success(b.closed)
    }

    /// The `data` string of a published message (read back from its encoding).
    static func dataField(_ m: OutMessage) -> String {
        var bytes = Array(m.prefix.buffer)
        bytes.append(UInt8(ascii: "}"))
        return (try? JSONParser.parse(bytes))?["data"]?.string ?? ""
    }

    func channelUsers(_ r: APIRequest, clusterUsers: [String]?? = nil) -> Result<[UInt8], Refusal> {
        let name = r.parameter("channel") ?? ""
        if let p = ChannelName.problem(name) {
            return .failure(Refusal(status: 400, text: "\(p): '\(name.prefix(200))'"))
        }
        guard ChannelName.kind(name) == .presence else {
            return .failure(Refusal(status: 400, text: "Users are only available for presence channels"))
        }
        var ids = hub.presenceUserIDs(ChannelKey(app: r.app.id, name: name))
        if let cluster = clusterUsers {
            guard let all = cluster else { return .failure(Refusal(status: 503, text: "Redis did not answer; retry")) }
            ids = all
        }
        var out: [UInt8] = Array(#"{"users":["#.utf8)
        for (i, id) in ids.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += Array(#"{"id":"#.utf8)
            JSONWriter.writeString(id, into: &out)
            out.append(UInt8(ascii: "}"))
        }
        out += Array("]}".utf8)
        return .success(out)
    }

    /// With Redis, on every node: answered once every node was told (503 when Redis cannot).
    func terminateUser(_ r: APIRequest, _ answer: @escaping (Result<[UInt8], Refusal>) -> Void) {
        let user = r.parameter("user") ?? ""
        guard !user.isEmpty, user.utf8.count <= PresenceMember.maxUserIDLength else {
            return answer(.failure(Refusal(status: 400, text: "Invalid user id")))
        }
        hub.terminateEverywhere(UserKey(app: r.app.id, id: user), loop: r.loop) { result in
            switch result {
            case .success: answer(.success(Self.emptyObject))
            case .failure(let e): answer(.failure(Refusal(status: 503, text: "Not terminated: \(e); retry")))
            }
        }
    }
}
