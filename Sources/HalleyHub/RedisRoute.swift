import HalleyCore
import HalleyLoop
import HalleyProtocol
import Synchronization

/// One loop's way to Redis, a single server or a Redis Cluster, found out when the first
/// connection comes (`CLUSTER SLOTS`: refused by a server without cluster support). A single
/// server is one connection. A cluster is one connection per master, each command sent to the
/// master of its key's slot (`RedisCluster.routingKey`); `MOVED` updates the map and sends the
/// command again, `ASK` sends it once to the node named (after `ASKING`); the map is read again
/// (`refresh`) after a redirection, when a connection goes, and when asked. `prepare` (the
/// function library) runs on every connection as it comes, before the route counts it.
/// `ready`: every slot has a master whose connection is up and prepared; `onStateChange` tells
/// the owner each time that changes. Loop-confined.
package final class RedisRoute {
    package let loop: EventLoop
    let url: RedisURL
    let prepare: [[UInt8]]?
    package private(set) var ready = false
    package var onStateChange: ((Bool) -> Void)?
    /// RESP3 pushes from any of the connections.
    package var onPush: ((RESPValue) -> Void)?
    /// Why the route is not ready (for the 503's log line).
    package private(set) var why = "connecting"

    enum Mode { case discovering, single, cluster }
    private(set) var mode = Mode.discovering

    final class Node {
        let address: RedisCluster.Address
        let connection: RedisConnection
        var prepared = false
        init(_ a: RedisCluster.Address, _ c: RedisConnection) {
            address = a
            connection = c
        }
    }
    /// The first connection (to the URL's server): the whole route when it is a single server;
    /// with a cluster, where the map is asked.
    let seed: Node
    var nodes: [Node] = []
    /// Slot → index in `nodes` (-1: no master known).
    var slotNode: [Int16] = []
    var refreshing = false
    var refreshAgain = false
    var lastRefresh: Int64 = -10_000
    var afterRefresh: [() -> Void] = []
    var watching = false
    /// Redirections followed before a command fails.
    let maxRedirects = 5

    /// Redirections followed (MOVED, ASK), shared by every route of the broker.
    let redirections: Redirections

    package final class Redirections: Sendable {
        package let moved = Atomic<Int>(0)
        package let ask = Atomic<Int>(0)
        package init() {}
        func count(_ r: RedisCluster.Redirect) {
            if r.ask { ask.add(1, ordering: .relaxed) } else { moved.add(1, ordering: .relaxed) }
        }
    }

    package init(loop: EventLoop, url: RedisURL, prepare: [[UInt8]]?, redirections: Redirections = Redirections()) {
        self.redirections = redirections
        self.loop = loop
        self.url = url
        self.prepare = prepare
        seed = Node(RedisCluster.Address(host: url.host, port: url.port), RedisConnection(loop: loop, url: url))
    }

    package func start() {
        seed.connection.onStateChange = { [unowned self] up, why in seedChanged(up: up, why: why) }
        seed.connection.onPush = { [unowned self] v in onPush?(v) }
        seed.connection.start()
    }

    /// The masters (a single server: one), for a log line and the tests.
    package var masters: Int { mode == .cluster ? nodes.count : 1 }

    // MARK: commands

    /// Sends a command to the server of its key; fails at once (`unavailable`) when not ready.
    package func send(_ args: [[UInt8]], _ reply: @escaping (Result<RESPValue, RedisError>) -> Void) {
        guard ready else { return reply(.failure(.unavailable(why))) }
        send(args, to: node(for: args), redirects: 0, reply)
    }

    func send(
        _ args: [[UInt8]], to n: Node, redirects: Int, _ reply: @escaping (Result<RESPValue, RedisError>) -> Void
    ) {
        n.connection.send(args) { [unowned self] r in
            guard case .failure(.server(let e)) = r, mode == .cluster,
                let to = RedisCluster.redirect(e, answeredBy: n.address)
            else { return reply(r) }
            redirected(args, to, redirects: redirects, reply)
        }
    }

    func redirected(
        _ args: [[UInt8]], _ to: RedisCluster.Redirect, redirects: Int,
        _ reply: @escaping (Result<RESPValue, RedisError>) -> Void
    ) {
        guard let n = follow(to), redirects < maxRedirects else {
            return reply(.failure(.unavailable("slot \(to.slot) moved to \(to.address), not reached yet")))
        }
        send(args, to: n, redirects: redirects + 1, reply)
    }

    /// Where a redirection sends the command again: counted; after `MOVED` the slot is the
    /// target's and the map is read again; after `ASK`, `ASKING` goes first on the target's
    /// connection. Nil when the target is not a master reached and prepared yet.
    func follow(_ to: RedisCluster.Redirect) -> Node? {
        redirections.count(to)
        let target = nodes.firstIndex { $0.address == to.address }
        if !to.ask {
            if let target { slotNode[to.slot] = Int16(target) }
            refresh()
        }
        guard let target, nodes[target].prepared else { return nil }
        let n = nodes[target]
        if to.ask { n.connection.send([Array("ASKING".utf8)]) { _ in } }
        return n
    }

    /// `SSUBSCRIBE` of one channel, on the master of its slot: `MOVED` and `ASK` are followed
    /// as for `send` (after the map is read again when the master named is not reached yet);
    /// `then(true)` when subscribed, false when not (the route went: the owner subscribes
    /// again when it comes back).
    package func subscribe(_ channel: [UInt8], redirects: Int = 0, then: @escaping (Bool) -> Void) {
        guard ready else { return then(false) }
        subscribe(channel, on: node(for: [[], channel]), redirects: redirects, then: then)
    }

    func subscribe(_ channel: [UInt8], on n: Node, redirects: Int, then: @escaping (Bool) -> Void) {
        n.connection.send([Array("SSUBSCRIBE".utf8), channel], answeredBy: "ssubscribe") { [unowned self] r in
            switch r {
            case .success:
                then(true)
            case .failure(.server(let e)):
                guard mode == .cluster, let to = RedisCluster.redirect(e, answeredBy: n.address),
                    redirects < maxRedirects
                else {
                    Log.error("redis: SSUBSCRIBE \(String(decoding: channel, as: UTF8.self)) refused: \(e)")
                    return then(false)
                }
                if let target = follow(to) {
                    return subscribe(channel, on: target, redirects: redirects + 1, then: then)
                }
                refresh { [self] in subscribe(channel, redirects: redirects + 1, then: then) }
            case .failure:
                then(false)
            }
        }
    }

    /// A `PING` on every connection (a pub/sub connection gets no replies of its own: the PING
    /// lets its watchdog see a link that died without TCP noticing).
    package func ping() {
        for n in mode == .cluster ? nodes : [seed] where n.connection.state == .ready {
            n.connection.send([Array("PING".utf8)]) { _ in }
        }
    }

    func node(for args: [[UInt8]]) -> Node {
        guard mode == .cluster, let key = RedisCluster.routingKey(args) else {
            return mode == .cluster ? nodes[0] : seed
        }
        let i = slotNode[RedisCluster.slot(key)]
        return i >= 0 ? nodes[Int(i)] : nodes[0]
    }

    // MARK: the map

    func seedChanged(up: Bool, why: String) {
        switch mode {
        case .single:
            seed.prepared = false
            if up { prepare(seed) } else { lost(why) }
        case .discovering:
            if up { discover() } else { lost(why) }
        case .cluster:
            if up { refresh() }
        }
    }

    func discover() {
        seed.connection.send([Array("CLUSTER".utf8), Array("SLOTS".utf8)]) { [self] r in
            switch r {
            case .failure(.server(let e)) where e.contains("cluster support disabled"):
                mode = .single
                prepare(seed)
            case .failure(.server(let e)):
                // An ACL user without CLUSTER, or a server that does not know it: a single server.
                Log.warning("redis: \(url) refused CLUSTER SLOTS (\(e)): taking it as a single server, not a cluster")
                mode = .single
                prepare(seed)
            case .failure:
                break  // the connection went: asked again when it comes back
            case .success(let v):
                guard url.db == 0 else {
                    return Log.error("redis: \(url) is a Redis Cluster, which has only database 0: drop /\(url.db)")
                }
                guard let ranges = RedisCluster.slotRanges(v, answeredBy: seed.address) else {
                    return Log.error("redis: an unreadable CLUSTER SLOTS answer from \(url)")
                }
                mode = .cluster
                apply(ranges)
                Log.lifecycle("redis: \(url) is a Redis Cluster of \(nodes.count) master(s)")
            }
        }
    }

    /// Reads the map again (at most once a second; `then` runs when it was read, or could not be).
    package func refresh(then: (() -> Void)? = nil) {
        if let then { afterRefresh.append(then) }
        guard mode == .cluster else { return finishRefresh() }
        guard !refreshing else { return refreshAgain = true }
        let wait = lastRefresh + 1000 - loop.now
        refreshing = true
        if wait > 0 {
            _ = loop.schedule(afterMillis: wait) { [self] in
                refreshing = false
                refresh()
            }
            return
        }
        lastRefresh = loop.now
        let asked = ([seed] + nodes).first { $0.connection.state == .ready }
        guard let asked else {
            refreshing = false
            return finishRefresh()
        }
        asked.connection.send([Array("CLUSTER".utf8), Array("SLOTS".utf8)]) { [self] r in
            refreshing = false
            if case .success(let v) = r, let ranges = RedisCluster.slotRanges(v, answeredBy: asked.address) {
                apply(ranges)
            }
            // Those waiting get the map just read; a refresh asked meanwhile reads it again.
            finishRefresh()
            if refreshAgain {
                refreshAgain = false
                refresh()
            }
        }
    }

    func finishRefresh() {
        let waiting = afterRefresh
        afterRefresh = []
        for f in waiting { f() }
    }

    func apply(_ ranges: [(ClosedRange<Int>, RedisCluster.Address)]) {
        var kept: [Node] = []
        var map = [Int16](repeating: -1, count: RedisCluster.slotCount)
        for (range, address) in ranges {
            let i: Int
            if let k = kept.firstIndex(where: { $0.address == address }) {
                i = k
            } else if let old = nodes.first(where: { $0.address == address }) {
                i = kept.count
                kept.append(old)
            } else {
                var u = url
                u.host = address.host
                u.port = address.port
                let n = Node(address, RedisConnection(loop: loop, url: u))
                n.connection.onStateChange = { [unowned self, unowned n] up, why in nodeChanged(n, up: up, why: why) }
                n.connection.onPush = { [unowned self] v in onPush?(v) }
                i = kept.count
                kept.append(n)
                n.connection.start()
            }
            for s in range { map[s] = Int16(i) }
        }
        let gone = nodes.filter { n in !kept.contains { $0 === n } }
        nodes = kept
        slotNode = map
        for n in gone {
            Log.info("redis: \(n.address) is no longer a master of the cluster")
            retire(n)
        }
        recompute()
    }

    /// Closes a former master's connection once the replies it owes have come (a publish it
    /// ran is answered as taken, not failed), or when they never come (the connection's
    /// command timeout fails them). Its state no longer counts for the route.
    func retire(_ n: Node) {
        n.connection.onStateChange = nil
        guard n.connection.inFlight > 0, n.connection.state == .ready else { return n.connection.stop() }
        _ = loop.schedule(afterMillis: 100) { [self] in retire(n) }
    }

    func nodeChanged(_ n: Node, up: Bool, why: String) {
        n.prepared = false
        if up {
            prepare(n)
        } else {
            lost(why)
            refresh()  // a master that went may have been replaced (failover)
        }
    }

    func prepare(_ n: Node) {
        guard let command = prepare else {
            n.prepared = true
            return recompute()
        }
        n.connection.send(command) { [self, unowned n] r in
            switch r {
            case .success:
                n.prepared = true
                recompute()
            case .failure(.server(let e)):
                // Still loading its data after a restart (LOADING), or not Redis 7: again in a
                // second while the connection lasts.
                Log.error("redis: \(n.address) refused \(String(decoding: command[0], as: UTF8.self)): \(e)")
                _ = loop.schedule(afterMillis: 1000) { [self, weak n] in
                    guard let n, !n.prepared, n.connection.state == .ready,
                        n === seed || nodes.contains(where: { $0 === n })
                    else { return }
                    prepare(n)
                }
            case .failure:
                break  // the connection went: again when it comes back
            }
        }
    }

    func lost(_ why: String) {
        self.why = why
        recompute()
    }

    func recompute() {
        let now: Bool
        switch mode {
        case .discovering: now = false
        case .single: now = seed.prepared
        case .cluster: now = !nodes.isEmpty && !slotNode.contains(-1) && nodes.allSatisfy(\.prepared)
        }
        // Also when it never was ready: a map read while the cluster was being made, or a
        // master of the first map that never answered.
        if !now && mode == .cluster { watchMap() }
        guard now != ready else { return }
        ready = now
        if !now && why.isEmpty { why = "a master is not reached" }
        if now { why = "" }
        onStateChange?(now)
    }

    /// While a cluster route is not ready, the map is read again every second: a master that
    /// went may come back where it was (its connection retries by itself) or be replaced by a
    /// replica elsewhere (only a new map says so).
    func watchMap() {
        guard !watching else { return }
        watching = true
        _ = loop.schedule(afterMillis: 1000) { [self] in
            watching = false
            guard !ready, mode == .cluster else { return }
            refresh()
            watchMap()
        }
    }
}
