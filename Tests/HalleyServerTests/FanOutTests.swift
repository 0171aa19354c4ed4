#if canImport(Glibc)
import Glibc
#endif
import Testing
import HalleyCore
@testable import HalleyWebSocket
@testable import HalleyServer

/// A fan-out endpoint for the test: "go" sends one PreparedMessage to every member and
/// reports what `send` returned and how many framings were built; "flood N" sends N messages
/// to the other members.
final class FanOut: WebSocketDelegate, @unchecked Sendable {
    // Loop-confined: the server runs one loop.
    var members: [WebSocketConnection] = []

    func webSocketDidOpen(_ ws: WebSocketConnection) { members.append(ws) }
    func webSocketDidClose(_ ws: WebSocketConnection, code: UInt16?) { members.removeAll { $0 === ws } }

    func webSocket(_ ws: WebSocketConnection, binary: UnsafeRawBufferPointer) {}

    func webSocket(_ ws: WebSocketConnection, text: UnsafeRawBufferPointer) {
        let cmd = String(decoding: text, as: UTF8.self)
        if cmd == "go" {
            let p = PreparedMessage(text: Array(String(repeating: "fan-out ", count: 400).utf8))
            let results = members.map { $0.send(p) }
            ws.send(
                text:
                    "sent \(results.filter { $0 == .written }.count) plain=\(p.plain == nil ? 0 : 1) deflated=\(p.deflated.count)"
            )
        } else if cmd.hasPrefix("flood ") {
            let n = Int(cmd.dropFirst(6))!
            let p = PreparedMessage(binary: [UInt8](repeating: 7, count: 16 * 1024))
            var counts: [SendResult: Int] = [:]
            for m in members where m !== ws {
                for _ in 0..<n { counts[m.send(p), default: 0] += 1 }
            }
            ws.send(
                text:
                    "written=\(counts[.written] ?? 0) buffered=\(counts[.buffered] ?? 0) dropped=\(counts[.dropped] ?? 0)"
            )
        }
    }
}

/// A blocking test client over a real socket.
final class TestClient {
    let fd: Int32
    var buffer: [UInt8] = []

    init(port: Int, extensions: String? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else { throw IOErrorForTest() }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var req =
            "GET /fanout HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if let e = extensions { req += "Sec-WebSocket-Extensions: \(e)\r\n" }
        send(Array((req + "\r\n").utf8))
        while true {
            if let r = findHeadEnd() {
                let head = String(decoding: buffer[..<r], as: UTF8.self)
                buffer.removeFirst(r + 4)
                guard head.hasPrefix("HTTP/1.1 101") else { throw IOErrorForTest() }
                break
            }
            try fill()
        }
    }

    deinit { close(fd) }

    struct IOErrorForTest: Error {}

    func findHeadEnd() -> Int? {
        guard buffer.count >= 4 else { return nil }
        for i in 0...(buffer.count - 4)
        where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
        return nil
    }

    func fill() throws {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 65536, 0) }
        guard n > 0 else { throw IOErrorForTest() }
        buffer += tmp[0..<n]
    }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func sendText(_ s: String) {
        let payload = Array(s.utf8)
        let key: [UInt8] = [1, 2, 3, 4]
        send([0x81, 0x80 | UInt8(payload.count)] + key + payload.enumerated().map { $0.element ^ key[$0.offset & 3] })
    }

    /// (first byte, payload) of the next frame.
    func readFrame() throws -> (UInt8, [UInt8]) {
        while true {
            if buffer.count >= 2 {
                var len = Int(buffer[1] & 0x7F)
                var off = 2
                if len == 126, buffer.count >= 4 {
                    len = Int(buffer[2]) << 8 | Int(buffer[3]); off = 4
                } else if len == 127, buffer.count >= 10 {
                    len = buffer[2..<10].reduce(0) { $0 << 8 | Int($1) }; off = 10
                }
                if (buffer[1] & 0x7F) < 126 || off > 2, buffer.count >= off + len {
                    let f = (buffer[0], Array(buffer[off..<(off + len)]))
                    buffer.removeFirst(off + len)
                    return f
                }
            }
            try fill()
        }
    }
}

@Suite(.serialized) struct FanOutTests {
    func withServer(_ configure: (inout ServerConfig) -> Void = { _ in }, _ body: (Int) throws -> Void) throws {
        var config = ServerConfig()
        config.port = 0
        config.threads = 1
        config.publicRoot = nil
        configure(&config)
        let router = Router()
        let fan = FanOut()
        router.addWebSocket("/fanout") { _ in fan }
        let server = Server(config: config, router: router)
        try server.start()
        defer {
            server.shutdown()
            server.wait()
        }
        try body(server.port)
    }

    @Test func preparedOnceSentToPlainAndCompressedClients() throws {
        try withServer { port in
            let plain = try TestClient(port: port)
            let z1 = try TestClient(port: port, extensions: "permessage-deflate; client_max_window_bits")
            let z2 = try TestClient(port: port, extensions: "permessage-deflate; client_no_context_takeover")
            plain.sendText("go")
            // Each member gets the message; the sender also gets the report after it.
            let expected = Array(String(repeating: "fan-out ", count: 400).utf8)
            for c in [plain, z1, z2] {
                let (b0, payload) = try c.readFrame()
                if c === plain {
                    #expect(b0 == 0x81)
                    #expect(payload == expected)
                } else {
                    #expect(b0 == 0xC1, "compressed (RSV1)")
                    #expect(payload.count < expected.count / 10)
                    let inflater = Inflater(resetAfterMessage: true)
                    guard case .ok(let out) = payload.withUnsafeBytes({ inflater.inflate($0, limit: 1 << 20) }) else {
                        Issue.record("does not inflate"); continue
                    }
                    #expect(Array(out) == expected)
                }
            }
            let (_, report) = try plain.readFrame()
            // One plain framing and one compressed framing served three connections.
            #expect(String(decoding: report, as: UTF8.self) == "sent 3 plain=1 deflated=1")
        }
    }

    @Test func dropPolicyReportsDropped() throws {
        try withServer({ c in
            c.webSocket.maxBufferedBytes = 64 * 1024
            c.webSocket.backpressure = .drop
        }) { port in
            let sender = try TestClient(port: port)
            let stuck = try TestClient(port: port)  // never reads
            sender.sendText("flood 2000")
            let (_, report) = try sender.readFrame()
            let text = String(decoding: report, as: UTF8.self)
            // 2000 × 16 KiB (32 MiB) outgrow the kernel buffers and the 64 KiB bound: most are
            // dropped, and every one is accounted for.
            let parts = Dictionary(
                uniqueKeysWithValues: text.split(separator: " ").map { p -> (String, Int) in
                    let kv = p.split(separator: "=")
                    return (String(kv[0]), Int(kv[1])!)
                })
            #expect(parts["written", default: 0] + parts["buffered", default: 0] + parts["dropped", default: 0] == 2000)
            #expect(parts["dropped", default: 0] > 1000)
            _ = stuck
        }
    }

    @Test func closePolicySends1008AfterTheQueue() throws {
        try withServer({ c in
            c.webSocket.maxBufferedBytes = 64 * 1024
            c.webSocket.backpressure = .close
        }) { port in
            let sender = try TestClient(port: port)
            let slow = try TestClient(port: port)
            sender.sendText("flood 2000")
            _ = try sender.readFrame()
            // The slow reader gets what was queued, then close 1008.
            var frames = 0
            while true {
                let (b0, payload) = try slow.readFrame()
                if b0 == 0x88 {
                    #expect(payload.count >= 2 && (UInt16(payload[0]) << 8 | UInt16(payload[1])) == 1008)
                    break
                }
                frames += 1
                #expect(payload.count == 16 * 1024)
            }
            #expect(frames > 0 && frames < 2000)
        }
    }
}
