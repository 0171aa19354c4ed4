import HalleyProtocol
import Testing

/// Redis Cluster's key slots, redirections and slot map, against the cluster specification's
/// own examples.
@Suite struct RedisClusterTests {
    @Test func crc16AndSlotsAsTheSpecificationGivesThem() {
        #expect(RedisCluster.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(RedisCluster.slot(Array("foo".utf8)) == 12182)
        #expect(RedisCluster.slot(Array("".utf8)) == 0)
        // Hash tags: only what is between the first { and the first } after it, when not empty.
        let tag = RedisCluster.slot(Array("user1000".utf8))
        #expect(RedisCluster.slot(Array("{user1000}.following".utf8)) == tag)
        #expect(RedisCluster.slot(Array("{user1000}.followers".utf8)) == tag)
        #expect(
            RedisCluster.slot(Array("foo{}{bar}".utf8)) == Int(RedisCluster.crc16(Array("foo{}{bar}".utf8))) % 16384)
        #expect(RedisCluster.slot(Array("foo{{bar}}zap".utf8)) == RedisCluster.slot(Array("{bar".utf8)))
        #expect(RedisCluster.slot(Array("foo{bar}{zap}".utf8)) == RedisCluster.slot(Array("bar".utf8)))
        #expect(RedisCluster.slot(Array("nobrace{".utf8)) == Int(RedisCluster.crc16(Array("nobrace{".utf8))) % 16384)
        // The hub's keys of one shard share a slot with the shard's pub/sub channel.
        #expect(RedisCluster.slot(Array("h:{24}:1:moving:m".utf8)) == RedisCluster.slot(Array("h:{24}".utf8)))
        #expect(RedisCluster.slot(Array("h:{24}".utf8)) == 5408)
    }

    @Test func redirections() {
        let me = RedisCluster.Address(host: "10.0.0.1", port: 7000)
        #expect(
            RedisCluster.redirect("MOVED 3999 127.0.0.1:6381", answeredBy: me)
                == .init(ask: false, slot: 3999, address: .init(host: "127.0.0.1", port: 6381)))
        #expect(
            RedisCluster.redirect("ASK 0 redis-b.local:7001", answeredBy: me)
                == .init(ask: true, slot: 0, address: .init(host: "redis-b.local", port: 7001)))
        // An unknown endpoint: the node that answered, on the port given.
        #expect(
            RedisCluster.redirect("MOVED 16383 :7002", answeredBy: me)?.address == .init(host: "10.0.0.1", port: 7002))
        #expect(RedisCluster.redirect("MOVED 1 ::1:7003", answeredBy: me)?.address == .init(host: "::1", port: 7003))
        for other in [
            "ERR unknown command", "MOVED", "MOVED 3999", "MOVED x 127.0.0.1:1", "MOVED 16384 h:1", "MOVED 1 h",
            "MOVED 1 h:0", "TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down",
        ] {
            #expect(RedisCluster.redirect(other, answeredBy: me) == nil, "\(other)")
        }
    }

    @Test func theSlotMapOfClusterSlots() throws {
        let me = RedisCluster.Address(host: "127.0.0.1", port: 7000)
        func node(_ host: String, _ port: Int64) -> RESPValue {
            .array([.bulk(Array(host.utf8)), .integer(port), .bulk(Array("id".utf8)), .map([])])
        }
        let answer = RESPValue.array([
            .array([.integer(0), .integer(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            .array([.integer(5461), .integer(10922), node("", 7001)]),
            .array([.integer(10923), .integer(16383), node("?", 7002)]),
        ])
        let r = try #require(RedisCluster.slotRanges(answer, answeredBy: me))
        #expect(r.map(\.0) == [0...5460, 5461...10922, 10923...16383])
        #expect(r.map(\.1.port) == [7000, 7001, 7002] && r.allSatisfy { $0.1.host == "127.0.0.1" })
        #expect(RedisCluster.slotRanges(.array([]), answeredBy: me)?.isEmpty == true)
        for bad: RESPValue in [
            .integer(1), .array([.array([.integer(5), .integer(4), node("h", 1)])]),
            .array([.array([.integer(0), .integer(16384), node("h", 1)])]),
            .array([.array([.integer(0), .integer(1)])]), .array([.array([.integer(0), .integer(1), node("h", 0)])]),
        ] {
            #expect(RedisCluster.slotRanges(bad, answeredBy: me) == nil, "\(bad)")
        }
    }

    @Test func commandsAreRoutedByTheirKey() {
        func key(_ args: [String]) -> String? {
            RedisCluster.routingKey(args.map { Array($0.utf8) }).map { String(decoding: $0, as: UTF8.self) }
        }
        #expect(key(["FCALL", "halley_publish", "2", "h:{1}:a:c:m", "h:{1}:a:c:s", "x"]) == "h:{1}:a:c:m")
        #expect(key(["FCALL", "f", "0"]) == nil)
        #expect(key(["XRANGE", "h:{1}:a:c:s", "1-0", "5-1"]) == "h:{1}:a:c:s")
        #expect(key(["SSUBSCRIBE", "h:{3}"]) == "h:{3}")
        #expect(key(["GET", "h:node:1"]) == "h:node:1")
        for keyless in [["PING"], ["FUNCTION", "LOAD", "REPLACE", "x"], ["CLUSTER", "SLOTS"], ["ASKING"], []] {
            #expect(key(keyless) == nil, "\(keyless)")
        }
    }
}
