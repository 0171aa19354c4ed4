import Testing

@testable import HalleyHub

@Suite struct BrokerWireTests {
    let key = ChannelKey(app: "1", name: "private-news")

    func published(_ m: BrokerWire.Message, epoch: String = "ab12", offset: UInt64 = 7) -> [UInt8] {
        Array("\(epoch) \(offset)\n".utf8) + BrokerWire.body(m)
    }

    @Test func aTextMessageRoundTrips() throws {
        var m = BrokerWire.Message(
            key: key, exclude: SessionID(a: 12, b: 34), prefix: Array(#"{"event":"e","data":"x\ny""#.utf8))
        let back = try BrokerWire.decode(published(m))
        m.epoch = "ab12"
        m.offset = 7
        #expect(back == m)
        #expect(back.binaryHeader == nil && back.binaryPayload == nil)
    }

    @Test func aBinaryMessageRoundTripsWithEveryByte() throws {
        for n in [0, 1, 125, 126, 1024, 65536] {
            let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            var m = BrokerWire.Message(
                key: key, exclude: nil, prefix: Array(#"{"event":"b","data":"AAEC""#.utf8),
                binaryHeader: Array(#"{"event":"b""#.utf8), binaryPayload: payload)
            let back = try BrokerWire.decode(published(m, offset: 1))
            m.epoch = "ab12"
            m.offset = 1
            #expect(back == m, "\(n)")
        }
    }

    @Test func aStreamEntryTakesItsOffsetAndEpochFromOutside() throws {
        let m = BrokerWire.Message(key: key, exclude: nil, prefix: Array("{}".utf8))
        let back = try BrokerWire.decodeBody(BrokerWire.body(m), epoch: "e9", offset: 42)
        #expect(back.epoch == "e9" && back.offset == 42 && back.key == key && back.prefix == Array("{}".utf8))
    }

    /// Every cut of a valid message is refused (a clean error, never a crash or a shorter message),
    /// except where the cut leaves a shorter valid binary payload (the payload runs to the end).
    @Test func everyTruncationIsRefused() {
        let text = published(
            BrokerWire.Message(key: key, exclude: SessionID(a: 1, b: 2), prefix: Array(#"{"event":"e""#.utf8)))
        for cut in 0..<text.count {
            #expect(throws: BrokerWire.DecodeError.self, "\(cut)") { try BrokerWire.decode(Array(text[..<cut])) }
        }
        let binary = published(
            BrokerWire.Message(
                key: key, exclude: nil, prefix: Array("{}".utf8), binaryHeader: Array("{".utf8), binaryPayload: [1, 2]))
        let headerEnd = binary.count - 2
        for cut in 0..<headerEnd {
            #expect(throws: BrokerWire.DecodeError.self, "\(cut)") { try BrokerWire.decode(Array(binary[..<cut])) }
        }
    }

    @Test func malformedMessagesAreRefused() {
        for bad in [
            "", "e\n", "e 0\n1\nc\n\n2 0\n{}", "e x\n1\nc\n\n2 0\n{}", " 1\n1\nc\n\n2 0\n{}", "e 1\n\nc\n\n2 0\n{}",
            "e 1\n1\n\n\n2 0\n{}", "e 1\n1\nc\nnot-an-id\n2 0\n{}", "e 1\n1\nc\n\n2\n{}", "e 1\n1\nc\n\n-1 0\n{}",
            "e 1\n1\nc\n\n9 0\n{}", "e 1\n1\nc\n\n2 0\n{}extra", "e 1\n1\nc\n\n2 9\n{}{",
        ] {
            #expect(throws: BrokerWire.DecodeError.self, "\(bad)") { try BrokerWire.decode(Array(bad.utf8)) }
        }
    }

    /// Nodes must agree on a channel's shard whatever process computes it (not `Hasher`).
    @Test func theShardIsStableAndSpread() {
        #expect(
            BrokerWire.shard(ChannelKey(app: "1", name: "news")) == BrokerWire.shard(ChannelKey(app: "1", name: "news"))
        )
        #expect(BrokerWire.shard(ChannelKey(app: "", name: "")) == 29)  // FNV-1a of "\n", mod 64
        var seen = Set<Int>()
        for i in 0..<1000 { seen.insert(BrokerWire.shard(ChannelKey(app: "1", name: "c\(i)"))) }
        #expect(seen.count == BrokerWire.shardCount)
        let k = BrokerWire.keys(ChannelKey(app: "7", name: "news"))
        let tag = "h:{\(BrokerWire.shard(ChannelKey(app: "7", name: "news")))}"
        #expect(k.meta == Array("\(tag):7:news:m".utf8) && k.stream == Array("\(tag):7:news:s".utf8))
        #expect(k.pubsub == Array(tag.utf8))
    }

    @Test func aPubSubChannelNamesItsShard() {
        for n in 0..<BrokerWire.shardCount {
            #expect(BrokerWire.shardOfPubsubChannel(String(decoding: BrokerWire.pubsubChannel(n), as: UTF8.self)) == n)
        }
        for other in ["h:{64}", "h:{-1}", "h:{+5}", "h:{}", "h:{1", "x:{1}", "h:{1}:a", "h:{١}"] {
            #expect(BrokerWire.shardOfPubsubChannel(other) == nil, "\(other)")
        }
    }
}
