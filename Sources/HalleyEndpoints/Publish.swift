import HalleyCore
import HalleyHub
import HalleyCrypto
import HalleyHTTP
import HalleyProtocol
import HalleyServer

/// `POST /publish`: `{channel | channels, event, data | data_base64, socket_id?}`, signed
/// like the Pusher HTTP API or with the app's bearer token.
extension HubEndpoints {
    func publishEndpoint(_ request: HTTPRequest, _ responder: Responder) {
        let app: App
        switch authenticate(request, path: "/publish") {
        case .success(let a): app = a
        case .failure(let e):
            Log.info("publish refused: 401 \(e.text)")
            responder.respond(HubHTTP.error(401, e.text))
            return
        }
        let p: PublishRequest
        do { p = try parsePublish(request.body, app: app) } catch {
            Log.info("publish refused: \(error.status) \(error.text)")
            return responder.respond(HubHTTP.error(error.status, error.text))
        }
        // The memory broker answers at once, without a closure made for the answer.
        if let r = hub.publishNow(
            app: app, channels: p.channels, event: p.event, data: p.data, binary: p.binary, exclude: p.exclude)
        {
            return responder.respond(Self.published(r))
        }
        hub.publish(
            app: app, channels: p.channels, event: p.event, data: p.data, binary: p.binary, exclude: p.exclude,
            loop: responder.loopIndex
        ) { result in
            switch result {
            case .success(let r): responder.respond(Self.published(r))
            case .failure(let e): responder.respond(Self.brokerDown(e, "publish"))
            }
        }
    }

    /// 503 with `Retry-After`: the broker (Redis) could not take a publish; nothing was lost
    /// silently (the publisher knows it must send again).
    static func brokerDown(_ e: RedisError, _ what: String) -> HTTPResponse {
        Log.warning("\(what) refused: 503 \(e)")
        var r = HubHTTP.error(503, "not published: \(e); retry")
        r.headers.append(("Retry-After", "1"))
        return r
    }

    /// `{"channels":{name:{"offset":N,"epoch":"…"}},"sessions":N}`: 201 when subscribers of
    /// this node got it, 202 when none here did (with Redis, other nodes' are not counted).
    static func published(_ r: Hub.PublishResult) -> HTTPResponse {
        // Sized first, then written once (SizedJSON): at most 52 bytes per channel besides its
        // name and epoch, and 64 around them.
        var room = 64
        for c in r.channels { room += SizedJSON.escapedCount(c.name) + SizedJSON.escapedCount(c.epoch) + 52 }
        let body = [UInt8](writing: room) { base in
            var w = SizedJSON.Writer(base: base)
            w.text(#"{"channels":{"#)
            for (k, c) in r.channels.enumerated() {
                if k > 0 { w.byte(UInt8(ascii: ",")) }
                w.string(c.name)
                w.text(#":{"offset":"#)
                w.decimal(c.offset)
                w.text(#","epoch":"#)
                w.string(c.epoch)
                w.byte(UInt8(ascii: "}"))
            }
            w.text(#"},"sessions":"#)
            w.decimal(UInt64(r.sessions))
            w.byte(UInt8(ascii: "}"))
            precondition(w.count <= room, "published: \(w.count) bytes written into \(room)")
            return w.count
        }
        return HubHTTP.json(r.sessions > 0 ? 201 : 202, body)
    }

    struct Refusal: Error {
        let status: Int
        let text: String
    }

    /// Bearer token (when the app has one) or the Pusher query signature.
    func authenticate(_ request: HTTPRequest, path: String) -> Result<App, Refusal> {
        if let auth = request.head.headers.valueBytes("Authorization") {
            guard let token = Self.bearerToken(auth) else {
                return .failure(Refusal(status: 401, text: "Authorization must be Bearer"))
            }
            let candidates: [App]
            if let k = Query.value(Query.parse(request.head.query), "key") {
                guard let a = hub.app(key: k) else { return .failure(Refusal(status: 401, text: "unknown key")) }
                candidates = [a]
            } else {
                candidates = hub.apps.apps
            }
            for a in candidates {
                if let t = a.token, Digest.constantTimeEqual(bytes: t.utf8, token) { return .success(a) }
            }
            return .failure(Refusal(status: 401, text: "invalid bearer token"))
        }
        do {
            let key = try PusherSignature.verify(
                method: request.method.description, path: path, rawQuery: request.head.query, body: request.body,
                now: Clock.wallSeconds(),
                secretsFor: { [self] in hub.app(key: $0)?.secrets(now: Clock.wallSeconds()) ?? [] })
            return .success(hub.app(key: key)!)
        } catch {
            return .failure(Refusal(status: 401, text: error.description))
        }
    }

    /// The token of `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1;
    /// spaces and tabs around the token dropped), as the header's own bytes; nil for another
    /// scheme. No copy: a publish checks it on every request. The scheme and the token are
    /// compared as bytes (a combining mark after `Bearer ` belongs to the token, which then
    /// matches no app's).
    static func bearerToken(_ auth: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        var i = auth.startIndex
        for expected in "bearer ".utf8 {
            guard i != auth.endIndex else { return nil }
            let c = auth[i]
            guard (c >= 0x41 && c <= 0x5A ? c | 0x20 : c) == expected else { return nil }  // A-Z in any case
            i += 1
        }
        var end = auth.endIndex
        while i != end, auth[i] == UInt8(ascii: " ") || auth[i] == UInt8(ascii: "\t") { i += 1 }
        while end != i, auth[end - 1] == UInt8(ascii: " ") || auth[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return auth[i..<end]
    }

    struct PublishRequest {
        var channels: [String]
        var event: String
        var data: String?
        var binary: [UInt8]?
        var exclude: SessionID?
    }

    /// The keys `parsePublish` reads, in the order of its `switch`.
    static let publishKeys: [StaticString] = ["event", "channel", "channels", "data_base64", "data", "socket_id"]

    /// The request's fields, checked (thrown, not a `Result`: a `Result` of this struct was
    /// destroyed through generic value witnesses, 2 % of a publish). The body is read in one
    /// pass (`JSONParser.readObject`): a member list and six lookups in it were about a third
    /// of this function's instructions.
    func parsePublish(_ body: [UInt8], app: App) throws(Refusal) -> PublishRequest {
        var eventV: JSONValue?, channelV: JSONValue?, channelsV: JSONValue?
        var base64V: JSONValue?, dataV: JSONValue?, socketV: JSONValue?
        let isObject: Bool
        do {
            isObject = try JSONParser.readObject(body, keys: Self.publishKeys) { k, v in
                switch k {
                case 0: eventV = v
                case 1: channelV = v
                case 2: channelsV = v
                case 3: base64V = v
                case 4: dataV = v
                default: socketV = v
                }
            }
        } catch {
            throw Refusal(status: 400, text: error.description)
        }
        guard isObject else { throw Refusal(status: 400, text: "body must be a JSON object") }
        guard let event = eventV?.string else {
            throw Refusal(status: 400, text: EventProblem.noName.text)
        }
        var channels: [String] = []
        if let c = channelV?.string { channels.append(c) }
        if let cs = channelsV {
            guard let a = cs.array else {
                throw Refusal(status: 400, text: "channels must be an array of strings")
            }
            for c in a {
                guard let s = c.string else {
                    throw Refusal(status: 400, text: "channels must be an array of strings")
                }
                channels.append(s)
            }
        }
        guard !channels.isEmpty else { throw Refusal(status: 400, text: "missing channel or channels") }
        guard channels.count <= config.maxChannelsPerPublish else {
            throw Refusal(status: 400, text: "more than \(config.maxChannelsPerPublish) channels")
        }
        if channels.count > 1 {
            var seen = Set<String>()
            channels = channels.filter { seen.insert($0).inserted }
        }
        for c in channels {
            if let p = ChannelName.problem(c) {
                throw Refusal(status: 400, text: "\(p): '\(c.prefix(200))'")
            }
        }
        var r = PublishRequest(channels: channels, event: event)
        if let b = base64V {
            guard let s = b.string, let bytes = Base64.decode(s) else {
                throw Refusal(status: 400, text: "data_base64 is not base64")
            }
            r.binary = bytes
        } else if let d = dataV {
            if case .string(let s) = d { r.data = s } else { r.data = String(decoding: d.serialized, as: UTF8.self) }
        } else {
            r.data = ""
        }
        if let p = config.eventProblem(app: app, name: event, dataBytes: r.binary?.count ?? r.data?.utf8.count ?? 0) {
            throw Refusal(status: p.status, text: p.text)
        }
        if let x = socketV {
            guard let s = x.string, let id = SessionID(s) else {
                throw Refusal(status: 400, text: "socket_id must look like 1234.5678")
            }
            r.exclude = id
        }
        return r
    }
}
