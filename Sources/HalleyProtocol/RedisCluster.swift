/// What a Redis Cluster client must know of the cluster's protocol (no I/O): which slot a key
/// hashes to, the `MOVED` / `ASK` redirections, and the slot map `CLUSTER SLOTS` answers.
/// (Cluster specification: "Key distribution model", "Redirection and resharding".)
public enum RedisCluster {
    public static let slotCount = 16384

    /// The key's slot: CRC16 (XMODEM) of its hash tag (the bytes between the first `{` and the
    /// first `}` after it, when not empty), else of the whole key, modulo 16384.
    public static func slot<C: Collection<UInt8>>(_ key: C) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")) {
            let rest = key[key.index(after: open)...]
            if let close = rest.firstIndex(of: UInt8(ascii: "}")), close != rest.startIndex {
                hashed = key[rest.startIndex..<close]
            }
        }
        return Int(crc16(hashed)) % slotCount
    }

    public static func crc16<C: Collection<UInt8>>(_ bytes: C) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 {
                crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }

    public struct Address: Hashable, Sendable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// `MOVED <slot> <host>:<port>` (the slot lives there now: update the map) or
    /// `ASK <slot> <host>:<port>` (this one command goes there, after `ASKING`). Nil for any
    /// other error. An empty host means the node that answered ("unknown endpoint").
    public struct Redirect: Equatable, Sendable {
        public var ask: Bool
        public var slot: Int
        public var address: Address
        public init(ask: Bool, slot: Int, address: Address) {
            self.ask = ask
            self.slot = slot
            self.address = address
        }
    }

    public static func redirect(_ error: String, answeredBy: Address) -> Redirect? {
        let parts = error.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
            (0..<slotCount).contains(slot), let colon = parts[2].lastIndex(of: ":"),
            let port = Int(parts[2][parts[2].index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        var host = String(parts[2][..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty || host == "?" { host = answeredBy.host }
        return Redirect(ask: parts[0] == "ASK", slot: slot, address: Address(host: host, port: port))
    }

    /// The masters' slot ranges from a `CLUSTER SLOTS` answer (`[[start, end, [host, port, id,
    /// …], replicas…], …]`); nil when the answer is not that shape. An empty or `?` host is the
    /// node that answered.
    public static func slotRanges(_ v: RESPValue, answeredBy: Address) -> [(ClosedRange<Int>, Address)]? {
        guard let entries = v.elements else { return nil }
        var out: [(ClosedRange<Int>, Address)] = []
        for e in entries {
            guard let f = e.elements, f.count >= 3, case .integer(let lo) = f[0], case .integer(let hi) = f[1],
                lo >= 0, lo <= hi, hi < slotCount, let master = f[2].elements, master.count >= 2,
                var host = master[0].string, case .integer(let port) = master[1], (1...65535).contains(port)
            else { return nil }
            if host.isEmpty || host == "?" { host = answeredBy.host }
            out.append((Int(lo)...Int(hi), Address(host: host, port: Int(port))))
        }
        return out
    }

    /// The key a command is routed by: the first key of `FCALL name numkeys key…`, else the
    /// first argument (every command Halley sends names one key there); nil for a command with
    /// no key (`PING`, `FUNCTION LOAD`, `CLUSTER …`, `ASKING`). Command names as Halley writes
    /// them: upper case.
    public static func routingKey(_ args: [[UInt8]]) -> [UInt8]? {
        guard let name = args.first else { return nil }
        if name == fcall { return args.count > 3 ? args[3] : nil }
        if keyless.contains(name) { return nil }
        return args.count > 1 ? args[1] : nil
    }

    static let fcall = Array("FCALL".utf8)
    static let keyless: Set<[UInt8]> = Set(["PING", "FUNCTION", "CLUSTER", "ASKING", "HELLO"].map { Array($0.utf8) })
}
