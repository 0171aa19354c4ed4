#if canImport(Glibc)
import Glibc
#endif
import HalleyCrypto
import HalleyLoop
import Synchronization
import Testing
@testable import HalleyHub

/// A blocking HTTP receiver on 127.0.0.1 port 0, on a thread of its own: one request per
/// connection, answered with the next of `statuses` (then 200).
final class TestReceiver: @unchecked Sendable {
    struct Request {
        var head: String
        var body: [UInt8]
        var status: Int
    }

    let fd: Int32
    let port: Int
    let state: Mutex<(statuses: [Int], requests: [Request])>

    init(statuses: [Int]) {
        state = Mutex((statuses, []))
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        _ = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        listen(s, 16)
        fd = s
        port = Socket.localPort(s)
        let box = Unmanaged.passRetained(self)
        var tid = pthread_t()
        pthread_create(
            &tid, nil,
            { arg in
                let r = Unmanaged<TestReceiver>.fromOpaque(arg!).takeRetainedValue()
                r.serve()
                return nil
            }, box.toOpaque())
        pthread_detach(tid)
    }

    func serve() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { return }
            var data: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            var headEnd: Int?
            var length = 0
            while true {
                let n = read(c, &buf, buf.count)
                if n <= 0 { break }
                data += buf[0..<n]
                if headEnd == nil, let r = Self.find(data, Array("\r\n\r\n".utf8)) {
                    headEnd = r + 4
                    let head = String(decoding: data[..<r], as: UTF8.self).lowercased()
                    if let l = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }) {
                        length = Int(l.dropFirst(15).trimmingSpaces()) ?? 0
                    }
                }
                if let h = headEnd, data.count >= h + length { break }
            }
            guard let h = headEnd else { close(c); continue }
            let status = state.withLock { s -> Int in
                let st = s.statuses.isEmpty ? 200 : s.statuses.removeFirst()
                s.requests.append(
                    Request(
                        head: String(decoding: data[..<h], as: UTF8.self), body: Array(data[h..<(h + length)]),
                        status: st))
                return st
            }
            let answer = Array("HTTP/1.1 \(status) X\r\nContent-Length: 0\r\n\r\n".utf8)
            _ = write(c, answer, answer.count)
            close(c)
        }
    }

    static func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return i }
        return nil
    }

    func waitFor(_ n: Int, seconds: Int) -> [Request] {
        for _ in 0..<(seconds * 50) {
            let r = state.withLock { $0.requests }
            if r.count >= n { return r }
            usleep(20_000)
        }
        return state.withLock { $0.requests }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// The real client and driver on a real loop, against `TestReceiver`.
@Suite(.serialized) struct WebhooksDeliveryTests {
    func fastPolicy() -> WebhookPolicy {
        var p = WebhookPolicy()
        p.batchMillis = 100
        p.debounceMillis = 300
        p.firstBackoffMillis = 200
        return p
    }

    func app(_ url: String) -> App {
        var a = App(id: "5", key: "k5", secret: "s5")
        a.webhooks = [Webhook(url: url)]
        return a
    }

    @Test func signedBatchRetriedAfterA500() throws {
        let rcv = TestReceiver(statuses: [500])
        defer { rcv.stop() }
        let loop = try EventLoop(index: 0, maxDescriptors: 65536)
        _ = loop.startThread()
        defer { loop.stop() }
        let hooks = Webhooks(loop: loop, policy: fastPolicy())
        let a = app("http://127.0.0.1:\(rcv.port)/h?x=1")
        hooks.emit(a, .channelOccupied(channel: "c1"))
        hooks.emit(a, .memberAdded(channel: "presence-p", userID: "u"))
        hooks.emit(App(id: "6", key: "k6", secret: "s6"), .channelOccupied(channel: "no-hooks"))
        let reqs = rcv.waitFor(2, seconds: 6)
        #expect(reqs.count == 2)
        guard reqs.count == 2 else { return }
        #expect(reqs[0].status == 500 && reqs[1].status == 200)
        #expect(reqs[0].body == reqs[1].body)
        let body = String(decoding: reqs[0].body, as: UTF8.self)
        #expect(body.hasPrefix("{\"time_ms\":"))
        #expect(
            body.hasSuffix(
                #","events":[{"name":"channel_occupied","channel":"c1"},{"name":"member_added","channel":"presence-p","user_id":"u"}]}"#
            ))
        let sig = Digest.hex(Digest.hmacSHA256(key: Array("s5".utf8), data: reqs[0].body))
        #expect(reqs[0].head.hasPrefix("POST /h?x=1 HTTP/1.1\r\nHost: 127.0.0.1:\(rcv.port)\r\n"))
        #expect(reqs[0].head.contains("\r\nX-Pusher-Key: k5\r\n"))
        #expect(reqs[0].head.contains("\r\nX-Pusher-Signature: \(sig)\r\n"))
        #expect(reqs[0].head.contains("\r\nContent-Type: application/json\r\n"))
        usleep(100_000)
        let m = hooks.metricsText()
        #expect(m.contains("halley_webhook_events_sent_total 2\n"))
        #expect(m.contains("halley_webhook_requests_failed_total 1\n"))
        #expect(m.contains("halley_webhook_retries_total 1\n"))
    }

    @Test func refusedConnectionIsRetried() throws {
        // A port with nothing listening: bind one, learn it, close it.
        let probe = TestReceiver(statuses: [])
        let deadPort = probe.port
        probe.stop()
        let loop = try EventLoop(index: 0, maxDescriptors: 65536)
        _ = loop.startThread()
        defer { loop.stop() }
        let hooks = Webhooks(loop: loop, policy: fastPolicy())
        hooks.emit(app("http://127.0.0.1:\(deadPort)/"), .channelOccupied(channel: "c"))
        var failed = false
        for _ in 0..<300 where !failed {
            usleep(20_000)
            failed = hooks.metricsText().contains("halley_webhook_retries_total 1\n")
        }
        #expect(failed, "\(hooks.metricsText())")
    }
}
