import Testing
import HalleyCore
@testable import HalleyWebSocket

@Suite struct FrameEncoderTests {
    @Test(arguments: [0, 1, 124, 125, 126, 127, 65535, 65536, 65537])
    func headerAtEveryLengthBoundary(_ n: Int) {
        let f = WebSocketFrameEncoder.frame(opcode: WebSocketOpcode.binary, payload: [UInt8](repeating: 7, count: n))
        let header: [UInt8]
        if n < 126 {
            header = [0x82, UInt8(n)]
        } else if n <= 65535 {
            header = [0x82, 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            header = [0x82, 127, 0, 0, 0, 0, 0, UInt8(n >> 16), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        }
        #expect(Array(f.prefix(header.count)) == header)
        #expect(f.count == header.count + n)
    }

    @Test func closePayloadIsCodeThenReason() {
        #expect(WebSocketFrameEncoder.closePayload(code: 1000, reason: "bye") == [0x03, 0xE8, 0x62, 0x79, 0x65])
        let long = WebSocketFrameEncoder.closePayload(code: 1001, reason: String(repeating: "é", count: 100))
        #expect(long.count <= 125)
        #expect(long.count % 2 == 0)  // "é" is two bytes: never cut in half
    }

    @Test func unmaskMatchesBytewiseXorAtEveryPhase() {
        let key: [UInt8] = [1, 2, 3, 4]
        let keyWord = key.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        for phase in 0..<4 {
            for count in [0, 1, 7, 8, 9, 31, 100] {
                var data = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7) }
                let expected = data.enumerated().map { $0.element ^ key[($0.offset + phase) & 3] }
                data.withUnsafeMutableBytes {
                    WebSocketFrameEncoder.unmask(
                        $0.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 8)!, count: count, key: keyWord,
                        phase: phase)
                }
                #expect(data == expected)
            }
        }
    }
}

@Suite struct FrameReaderTests {
    @Test func textFrameEverySplit() {
        #expect(readEverySplit(clientFrame(1, Array("Hello".utf8))) == [.text(Array("Hello".utf8))])
    }

    @Test(arguments: [0, 124, 125, 126, 127, 65535, 65536, 65537])
    func binaryAtEveryLengthBoundary(_ n: Int) {
        let payload = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let f = clientFrame(2, payload)
        let offsets = n < 200 ? nil : [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, f.count / 2, f.count - 1]
        #expect(readEverySplit(f, offsets: offsets) == [.binary(payload)])
    }

    @Test func fragmentedMessageWithInterleavedPing() {
        let bytes =
            clientFrame(1, Array("Hel".utf8), fin: false) + clientFrame(9, [1, 2])
            + clientFrame(0, Array("lo".utf8), fin: false) + clientFrame(0, [], fin: true)
        #expect(readEverySplit(bytes) == [.ping([1, 2]), .text(Array("Hello".utf8))])
    }

    @Test func codePointSplitAcrossFragments() {
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        let bytes = clientFrame(1, [euro[0]], fin: false) + clientFrame(0, Array(euro[1...]))
        #expect(readEverySplit(bytes) == [.text(euro)])
    }

    @Test func invalidUTF8FailsFastInsideAFragment() {
        // The first fragment already cannot be UTF-8: fail before the message ends.
        #expect(read([clientFrame(1, [0x48, 0xC0, 0x80], fin: false)]) == [.fail(1007)])
        #expect(readEverySplit(clientFrame(1, [0xED, 0xA0, 0x80])) == [.fail(1007)])  // a surrogate
        #expect(readEverySplit(clientFrame(1, [0xF4, 0x90, 0x80, 0x80])) == [.fail(1007)])  // > U+10FFFF
        // Incomplete at the end of the message.
        #expect(readEverySplit(clientFrame(1, [0xE2, 0x82])) == [.fail(1007)])
    }

    @Test func protocolErrorsClose1002() {
        #expect(read([clientFrame(1, [65], masked: false)]) == [.fail(1002)])
        #expect(read([clientFrame(1, [65], rsv: 0x20)]) == [.fail(1002)])
        #expect(read([clientFrame(1, [65], rsv1: true)]) == [.fail(1002)])  // no deflate negotiated
        #expect(read([clientFrame(3, [65])]) == [.fail(1002)])
        #expect(read([clientFrame(11, [])]) == [.fail(1002)])
        #expect(read([clientFrame(9, [UInt8](repeating: 0, count: 126))]) == [.fail(1002)])
        #expect(read([clientFrame(9, [], fin: false)]) == [.fail(1002)])
        #expect(read([clientFrame(0, [65])]) == [.fail(1002)])
        #expect(read([clientFrame(1, [65], fin: false) + clientFrame(1, [66])]) == [.fail(1002)])
    }

    @Test func nothingIsReadAfterAFailure() {
        #expect(read([clientFrame(3, []) + clientFrame(1, [65])]) == [.fail(1002)])
    }

    @Test func closeFrames() {
        #expect(readEverySplit(clientFrame(8, [])) == [.close(nil, [])])
        #expect(readEverySplit(clientFrame(8, [0x03, 0xE8] + Array("ok".utf8))) == [.close(1000, Array("ok".utf8))])
        #expect(read([clientFrame(8, [0x03])]) == [.fail(1002)])
        for bad: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            #expect(read([clientFrame(8, [UInt8(bad >> 8), UInt8(bad & 0xFF)])]) == [.fail(1002)], "code \(bad)")
        }
        for good: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            #expect(
                read([clientFrame(8, [UInt8(good >> 8), UInt8(good & 0xFF)])]) == [.close(good, [])], "code \(good)")
        }
        #expect(read([clientFrame(8, [0x03, 0xE8, 0xFF])]) == [.fail(1007)])
    }

    @Test func messageSizeLimit() {
        var limits = WebSocketReader.Limits()
        limits.maxMessageBytes = 100
        #expect(
            read([clientFrame(2, [UInt8](repeating: 1, count: 100))], limits: limits) == [
                .binary([UInt8](repeating: 1, count: 100))
            ])
        #expect(read([clientFrame(2, [UInt8](repeating: 1, count: 101))], limits: limits) == [.fail(1009)])
        // Refused from the header alone, before the payload arrives.
        #expect(
            read([Array(clientFrame(2, [UInt8](repeating: 1, count: 1000)).prefix(8))], limits: limits) == [.fail(1009)]
        )
        let fragmented =
            clientFrame(2, [UInt8](repeating: 1, count: 60), fin: false)
            + clientFrame(0, [UInt8](repeating: 1, count: 60))
        #expect(read([fragmented], limits: limits) == [.fail(1009)])
    }

    @Test func pingPongPayloads() {
        #expect(
            readEverySplit(clientFrame(9, Array("p".utf8)) + clientFrame(10, [])) == [
                .ping(Array("p".utf8)), .pong([]),
            ])
    }
}
