import HalleyCore
import HalleyProtocol

/// Presence across nodes (`halley_join` / `halley_leave`): one roster per channel in Redis, keyed
/// by session, with a count of sessions per user; `member_added` / `member_removed` are sent to
/// every node by the function that saw the user's first or last session (once per cluster).
/// Each node lists its members in `h:members:<number>`; when a node's key expired (it died),
/// one node at a time (`h:sweeper`) takes its members out, within the node TTL (15 s) and one
/// sweep (5 s).
extension RedisBroker {
    static func membersKey(_ node: Int) -> String { "h:members:\(node)" }

    /// `<app>\n<channel>\n<session>`: an entry of a node's member list.
    static func memberEntry(_ key: ChannelKey, _ session: SessionID) -> String {
        "\(key.app)\n\(key.name)\n\(session)"
    }

    package func join(
        _ key: ChannelKey, session: SessionID, member: PresenceMember, max: Int, loop: Int,
        then: @escaping (Result<(first: Bool, roster: [UInt8])?, RedisError>) -> Void
    ) {
        let link = links[loop]
        guard link.ready else {
            return then(.failure(.unavailable("not connected")))
        }
        let k = BrokerWire.presenceKeys(key)
        let node = session.node
        if node > 0 {
            link.route.send(
                [Array("SADD".utf8), Array(Self.membersKey(node).utf8), Array(Self.memberEntry(key, session).utf8)]
            ) { _ in }
        }
        link.route.send(
            [
                Array("FCALL".utf8), Array("halley_join".utf8), Array("2".utf8), k.roster, k.users,
                Array(session.description.utf8), Array(member.userID.utf8), member.info, Array(String(max).utf8),
                Array(key.app.utf8), Array(key.name.utf8), BrokerWire.keys(key).pubsub, Array(session.description.utf8),
            ]
        ) { r in
            switch r {
            case .success(let v):
                guard let a = v.elements, a.count == 2, case .integer(let first) = a[0], let values = a[1].elements
                else {
                    return then(.failure(.server("unexpected answer to halley_join: \(v)")))
                }
                if first < 0 { return then(.success(nil)) }
                then(.success((first == 1, Self.roster(values))))
            case .failure(let e):
                then(.failure(e))
            }
        }
    }

    /// `{"ids":[…],"hash":{id: user_info},"count":N}` from the roster's values (`user\ninfo`),
    /// each user once.
    static func roster(_ values: [RESPValue]) -> [UInt8] {
        var seen = Set<String>()
        var users: [(String, [UInt8])] = []
        for v in values {
            guard case .bulk(let b) = v, let nl = b.firstIndex(of: 0x0A) else { continue }
            let user = String(decoding: b[..<nl], as: UTF8.self)
            if seen.insert(user).inserted { users.append((user, Array(b[(nl + 1)...]))) }
        }
        return Hub.presenceRoster(users)
    }

    package func leave(_ key: ChannelKey, session: SessionID, loop: Int, then: @escaping (String?) -> Void) {
        let link = links[loop]
        guard link.ready else {
            // Redis away: the member stays in the roster until this node's sweep (or its death).
            pendingLeaves.withLock { $0.append((key, session)) }
            return then(nil)
        }
        leave(key, session: session, on: link.route, then: then)
    }

    func leave(_ key: ChannelKey, session: SessionID, on c: RedisRoute, then: @escaping (String?) -> Void) {
        let k = BrokerWire.presenceKeys(key)
        c.send(
            [
                Array("FCALL".utf8), Array("halley_leave".utf8), Array("2".utf8), k.roster, k.users,
                Array(session.description.utf8), Array(key.app.utf8), Array(key.name.utf8),
                BrokerWire.keys(key).pubsub, Array(session.description.utf8),
            ]
        ) { r in
            guard case .success(let v) = r, let a = v.elements, a.count == 2, case .integer(let last) = a[0] else {
                return then(nil)
            }
            then(last == 1 ? a[1].string : nil)
        }
        if session.node > 0 {
            c.send([
                Array("SREM".utf8), Array(Self.membersKey(session.node).utf8),
                Array(Self.memberEntry(key, session).utf8),
            ]) {
                _ in
            }
        }
    }

    package func presenceUsers(_ key: ChannelKey, loop: Int, then: @escaping ([String]?) -> Void) {
        let link = links[loop]
        guard link.ready else { return then(nil) }
        link.route.send([Array("HKEYS".utf8), BrokerWire.presenceKeys(key).users]) { r in
            guard case .success(let v) = r, let users = v.elements else { return then(nil) }
            then(users.compactMap(\.string).sorted())
        }
    }

    /// Every 5 s on loop 0: leaves that could not be sent are sent; then, one node at a time,
    /// the members of nodes whose key expired are taken out (`member_removed`, webhooks).
    func sweepPresence() {
        guard let hub, links[0].ready else { return }
        let c = links[0].route
        let retry = pendingLeaves.withLock { p in
            defer { p.removeAll() }
            return p
        }
        for (key, session) in retry {
            leave(key, session: session, on: c) { user in if let user { hub.memberLeft(key, user) } }
        }
        retryOccupancy()
        command(["SET", "h:sweeper", hub.advertisedAddress, "NX", "PX", "4000"]) { [self] r in
            guard case .success(.simple("OK")) = r else { return }
            command(["SMEMBERS", "h:nodes"]) { [self] r in
                guard case .success(let v) = r, let nodes = v.elements else { return }
                for n in nodes.compactMap({ $0.string.flatMap { Int($0) } }) { sweepNode(n) }
            }
        }
    }

    func sweepNode(_ n: Int) {
        command(["EXISTS", "h:node:\(n)"]) { [self] r in
            guard case .success(.integer(0)) = r else { return }
            command(["SMEMBERS", Self.membersKey(n)]) { [self] r in
                guard case .success(let v) = r, let entries = v.elements, let hub else { return }
                if !entries.isEmpty {
                    Log.info("node \(n) is gone: taking its \(entries.count) presence member(s) out")
                }
                for e in entries {
                    guard let s = e.string else { continue }
                    let parts = s.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
                    guard parts.count == 3, let id = SessionID(String(parts[2])) else { continue }
                    let key = ChannelKey(app: String(parts[0]), name: String(parts[1]))
                    leave(key, session: id, on: links[0].route) { user in if let user { hub.memberLeft(key, user) }
                    }
                }
                evictOccupancy(node: n)
                command(["DEL", Self.membersKey(n)]) { _ in }
                command(["SREM", "h:nodes", String(n)]) { _ in }
            }
        }
    }
}
