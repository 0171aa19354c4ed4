import Testing
import HalleyHTTP
@testable import HalleyServer

@Suite struct RouterTests {
    func router() -> Router {
        let r = Router()
        r.add([.get], "/exact") { _, _ in }
        r.add([.post], "/apps/{id}/events") { _, _ in }
        r.add([.get], "/app/{key}") { _, _ in }
        return r
    }

    @Test func exactPath() {
        guard case .handler(_, let p) = router().match(.get, "/exact") else { Issue.record("no match"); return }
        #expect(p.isEmpty)
    }

    @Test func headFollowsGet() {
        guard case .handler = router().match(.head, "/exact") else {
            Issue.record("HEAD should match a GET route"); return
        }
    }

    @Test func parametersAreDecoded() {
        guard case .handler(_, let p) = router().match(.post, "/apps/42/events") else {
            Issue.record("no match"); return
        }
        #expect(p == ["id": "42"])
        guard case .handler(_, let q) = router().match(.get, "/app/my%20key") else { Issue.record("no match"); return }
        #expect(q == ["key": "my key"])
    }

    /// Parameters by name: two of them, either order equal; a name used twice in a pattern
    /// takes the later segment (as the dictionary it replaced did); a name not matched is nil.
    @Test func parametersByName() {
        let r = router()
        r.add([.get], "/two/{a}/{b}") { _, _ in }
        r.add([.get], "/twice/{x}/{x}") { _, _ in }
        guard case .handler(_, let p) = r.match(.get, "/two/1/2") else { Issue.record("no match"); return }
        #expect(p["a"] == "1" && p["b"] == "2" && p["c"] == nil)
        #expect(p == ["b": "2", "a": "1"])
        #expect(p != ["a": "1", "b": "3"])
        #expect(p != ["a": "1"])
        guard case .handler(_, let q) = r.match(.get, "/twice/1/2") else { Issue.record("no match"); return }
        #expect(q == ["x": "2"])
    }

    @Test func wrongMethodListsAllowed() {
        guard case .methodNotAllowed(let allowed) = router().match(.delete, "/exact") else {
            Issue.record("expected 405"); return
        }
        #expect(allowed.contains(.get) && allowed.contains(.head))
    }

    @Test func patternsCompareTheirLiteralsByteForByte() {
        let r = router()
        r.add([.get], "/apps/{id}/channels") { _, _ in }
        r.add([.get], "/caf\u{e9}/{x}") { _, _ in }
        guard case .handler(_, let p) = r.match(.get, "/apps/7/channels") else { Issue.record("no match"); return }
        #expect(p == ["id": "7"])
        guard case .methodNotAllowed(let allowed) = r.match(.get, "/apps/7/events") else {
            Issue.record("expected 405"); return
        }
        #expect(allowed == [.post])
        guard case .notFound = r.match(.post, "/apps/7/event") else { Issue.record("expected not found"); return }
        guard case .handler(_, let q) = r.match(.get, "//apps//8//channels/") else { Issue.record("no match"); return }
        #expect(q == ["id": "8"])
        guard case .handler(_, let u) = r.match(.get, "/caf\u{e9}/%C3%A9t%C3%A9") else {
            Issue.record("no match"); return
        }
        #expect(u == ["x": "\u{e9}t\u{e9}"])
        // The same word decomposed (e + combining acute) is another path.
        guard case .notFound = r.match(.get, "/cafe\u{301}/x") else { Issue.record("expected not found"); return }
    }

    /// Paths split at every slash: more segments than any pattern has, none at all, a literal
    /// that only shares a prefix, and every cut of a matching path.
    @Test func segmentsAreCountedAndComparedWhole() {
        let r = router()
        for path in [
            "/apps/7/events/x", "/apps/7/events/x/y/z/w/v/u", "/", "", "///", "/apps/7/eventsx", "/apps/7/event",
        ] {
            guard case .notFound = r.match(.post, Substring(path)) else {
                Issue.record("\(path): expected not found"); continue
            }
        }
        let whole = "/apps/12/events"
        for cut in 0..<whole.count {
            let path = Substring(whole.prefix(cut))
            if case .handler = r.match(.post, path) { Issue.record("\(path) matched") }
        }
        guard case .handler(_, let p) = r.match(.post, "apps/12/events") else { Issue.record("no match"); return }
        #expect(p == ["id": "12"])
    }

    @Test func unknownPathWithoutFallback() {
        guard case .notFound = router().match(.get, "/nope") else { Issue.record("expected not found"); return }
        guard case .notFound = router().match(.get, "/app/a/b") else {
            Issue.record("segment count must match"); return
        }
    }
}

@Suite struct StaticPathTests {
    func decode(_ s: String) -> String?? {
        switch StaticFiles.decodePath(Substring(s)) {
        case .success(let p): return .some(p)
        case .failure: return .none
        }
    }

    @Test func plainPaths() {
        #expect(decode("/") == .some("/"))
        #expect(decode("/a/b.html") == .some("/a/b.html"))
        #expect(decode("//a///b") == .some("/a/b"))
        #expect(decode("/dir/") == .some("/dir/"))
        #expect(decode("/caf%C3%A9.txt") == .some("/café.txt"))
    }

    @Test func escapesAreRefused() {
        for bad in [
            "/..", "/../etc/passwd", "/a/../../b", "/%2e%2e/x", "/%2E%2E/x", "/.%2e/x", "/a%2fb", "/a%2Fb",
            "/a%5cb", "/a%00b", "/a\\b", "/%zz", "/%c3", "/./a",
        ] {
            #expect(decode(bad) == nil, "\(bad) must be refused")
        }
    }

    @Test func dotfilesAreNotServed() {
        #expect(decode("/.git/config") == .some(nil))
        #expect(decode("/a/.env") == .some(nil))
    }
}

@Suite struct ContentTypeTests {
    @Test func byExtension() {
        #expect(ContentTypes.forPath("/a/b.HTML") == "text/html; charset=utf-8")
        #expect(ContentTypes.forPath("/halley.js") == "text/javascript; charset=utf-8")
        #expect(ContentTypes.forPath("/x.tar.gz") == "application/octet-stream")
        #expect(ContentTypes.forPath("/dir.d/file") == "application/octet-stream")
    }
}
