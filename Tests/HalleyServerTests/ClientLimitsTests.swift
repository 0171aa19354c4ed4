import Testing
import HalleyHTTP
import HalleyLoop
@testable import HalleyServer

/// Per-address limits (issue 18): addresses, ranges, the client behind trusted proxies, the
/// token bucket and the lingering count. I/O-free.
@Suite struct ClientLimitsTests {
    func headers(_ fields: [(String, String)]) -> HTTPHeaders {
        var text = "GET / HTTP/1.1\r\nHost: h\r\n"
        for (k, v) in fields { text += "\(k): \(v)\r\n" }
        text += "\r\n"
        var parser = HTTPRequestParser()
        return Array(text.utf8).withUnsafeBytes { raw in
            guard case .head(let h, _) = parser.parse(raw) else { fatalError("no head") }
            return h.headers
        }
    }

    func ip(_ s: String) -> IPAddress { IPAddress(Substring(s))! }

    @Test func addressesParseAndPrint() {
        #expect(ip("192.0.2.7").description == "192.0.2.7" && ip("192.0.2.7").isV4)
        #expect(ip("::ffff:192.0.2.7") == ip("192.0.2.7"))
        #expect(ip("[2001:db8::1]").description == "2001:db8::1" && !ip("2001:db8::1").isV4)
        #expect(ip("::1").description == "::1")
        for bad in ["", "1.2.3", "1.2.3.256", "example.com", "1.2.3.4:80", "2001:db8::1%eth0", "unknown"] {
            #expect(IPAddress(Substring(bad)) == nil, "\(bad)")
        }
    }

    @Test func networksContainTheirAddresses() {
        let n = IPNetwork("10.1.0.0/16")!
        #expect(n.contains(ip("10.1.255.3")) && !n.contains(ip("10.2.0.1")) && !n.contains(ip("::1")))
        #expect(IPNetwork("127.0.0.1")!.contains(ip("127.0.0.1")) && !IPNetwork("127.0.0.1")!.contains(ip("127.0.0.2")))
        #expect(IPNetwork("0.0.0.0/0")!.contains(ip("203.0.113.9")))
        #expect(
            IPNetwork("2001:db8::/32")!.contains(ip("2001:db8:ffff::1"))
                && !IPNetwork("2001:db8::/32")!.contains(ip("2001:db9::1")))
        #expect(IPNetwork("fd00::/8")!.contains(ip("fdab::1")))
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/x", "nope/8"] {
            #expect(IPNetwork(Substring(bad)) == nil, "\(bad)")
        }
    }

    func limits(_ tweak: (inout ClientLimitConfig) -> Void = { _ in }) -> ClientLimits {
        var c = ClientLimitConfig()
        c.trustedProxies = [IPNetwork("10.0.0.1")!, IPNetwork("192.168.0.0/16")!]
        tweak(&c)
        return ClientLimits(config: c)
    }

    @Test func theClientIsReadFromTheRightOnlyBehindATrustedProxy() {
        let l = limits()
        // Not a trusted proxy: its headers are not believed.
        #expect(
            l.clientAddress(peer: ip("203.0.113.5"), headers: headers([("X-Forwarded-For", "1.1.1.1")]))
                == ip("203.0.113.5"))
        // Trusted: the right-most address that is not itself a trusted proxy.
        #expect(
            l.clientAddress(
                peer: ip("10.0.0.1"), headers: headers([("X-Forwarded-For", "6.6.6.6, 198.51.100.4, 192.168.3.3")]))
                == ip("198.51.100.4"))
        #expect(
            l.clientAddress(peer: ip("10.0.0.1"), headers: headers([("X-Forwarded-For", "198.51.100.4:5555")]))
                == ip("198.51.100.4"))
        // Two header lines are one list (RFC 9110 §5.3).
        #expect(
            l.clientAddress(
                peer: ip("10.0.0.1"),
                headers: headers([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.8")]))
                == ip("198.51.100.8"))
        // Only the configured header is read: a Forwarded the client wrote (and the proxy passed
        // through) names nobody.
        #expect(
            l.clientAddress(
                peer: ip("10.0.0.1"),
                headers: headers([
                    ("X-Forwarded-For", "198.51.100.4"),
                    ("Forwarded", "for=192.0.2.60"),
                ])) == ip("198.51.100.4"))
        #expect(
            l.clientAddress(peer: ip("10.0.0.1"), headers: headers([("Forwarded", "for=192.0.2.60")])) == ip("10.0.0.1")
        )
        // Only trusted proxies in the list: the left-most.
        #expect(
            l.clientAddress(peer: ip("10.0.0.1"), headers: headers([("X-Forwarded-For", "192.168.1.1, 192.168.2.2")]))
                == ip("192.168.1.1"))
        // No header.
        #expect(l.clientAddress(peer: ip("10.0.0.1"), headers: headers([])) == ip("10.0.0.1"))
    }

    @Test func forwardedWhenConfigured() {
        let l = limits { $0.clientAddressHeader = "Forwarded" }
        // Quoted, bracketed IPv6 with a port; other parameters ignored.
        #expect(
            l.clientAddress(
                peer: ip("10.0.0.1"),
                headers: headers([
                    ("X-Forwarded-For", "198.51.100.4"),
                    ("Forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::7]:47011\""),
                ])) == ip("2001:db8::7"))
        // An obfuscated or unknown node, or an element without for=: nothing to believe past it.
        #expect(
            l.clientAddress(peer: ip("10.0.0.1"), headers: headers([("Forwarded", "for=unknown")])) == ip("10.0.0.1"))
        #expect(
            l.clientAddress(peer: ip("10.0.0.1"), headers: headers([("Forwarded", "for=192.0.2.60, proto=https")]))
                == ip("10.0.0.1"))
        // A one-address header.
        let r = limits { $0.clientAddressHeader = "X-Real-IP" }
        #expect(
            r.clientAddress(peer: ip("10.0.0.1"), headers: headers([("X-Real-IP", "198.51.100.9")]))
                == ip("198.51.100.9"))
    }

    @Test func connectionsCountPerAddressAndTrustedProxiesAreExempt() {
        let l = limits { $0.maxConnectionsPerAddress = 2 }
        #expect(l.countsConnections(of: ip("203.0.113.5")) && !l.countsConnections(of: ip("10.0.0.1")))
        #expect(l.connectionOpened(ip("203.0.113.5"), now: 0) && l.connectionOpened(ip("203.0.113.5"), now: 0))
        #expect(!l.connectionOpened(ip("203.0.113.5"), now: 0))
        #expect(l.connectionOpened(ip("203.0.113.6"), now: 0))
        l.connectionClosed(ip("203.0.113.5"))
        #expect(l.connectionOpened(ip("203.0.113.5"), now: 0))
        #expect(l.tallies[0].refused.load(ordering: .relaxed) == 1)
    }

    @Test func sessionOpensFollowATokenBucket() {
        let l = limits {
            $0.sessionOpensPerSecond = 10; $0.sessionOpenBurst = 3
        }
        let a = ip("203.0.113.5")
        #expect((0..<3).map { _ in l.sessionOpen(a, now: 1000) } == [nil, nil, nil])
        #expect(l.sessionOpen(a, now: 1000) == .sessionOpens)
        #expect(l.sessionOpen(a, now: 1099) == .sessionOpens)  // 0.99 of a token
        #expect(l.sessionOpen(a, now: 1100) == nil)  // 100 ms at 10/s: one token
        #expect(l.sessionOpen(ip("203.0.113.6"), now: 1100) == nil)  // its own bucket
        // An IPv6 /64 shares one bucket.
        let b = limits {
            $0.sessionOpensPerSecond = 1; $0.sessionOpenBurst = 1
        }
        #expect(b.sessionOpen(ip("2001:db8:1:2::1"), now: 0) == nil)
        #expect(b.sessionOpen(ip("2001:db8:1:2::ffff"), now: 0) == .sessionOpens)
        #expect(b.sessionOpen(ip("2001:db8:1:3::1"), now: 0) == nil)
    }

    @Test func lingeringSessionsCountPerAddressAndForgottenWhenIdle() {
        let l = limits {
            $0.maxLingeringPerAddress = 2; $0.sessionOpensPerSecond = 0
        }
        let a = ip("203.0.113.5")
        l.lingering(a, 1, now: 0)
        l.lingering(a, 1, now: 0)
        #expect(l.sessionOpen(a, now: 0) == .lingeringSessions)
        l.lingering(a, -1, now: 0)
        #expect(l.sessionOpen(a, now: 0) == nil)
        l.lingering(a, -1, now: 0)
        #expect(l.trackedAddresses == 1)
        l.sweep(now: 10_000)
        #expect(l.trackedAddresses == 0)
    }
}
