import HalleyWebSocket
import Testing

@testable import HalleyHub

/// `App` keeps its fields in one shared storage, copied on the first write to a shared copy.
@Suite struct AppTests {
    @Test func aCopyIsItsOwnValue() {
        let a = App(id: "1", key: "k", secret: "s", token: "t")
        var b = a
        #expect(b == a)
        b.secret = "other"
        b.webhooks = []
        b.maxEventBytes = 10
        #expect(a.secret == "s" && a.maxEventBytes == nil)
        #expect(b.secret == "other" && b.maxEventBytes == 10 && b.key == "k" && b.token == "t")
        #expect(b != a)
        var c = b
        c.secret = "s"
        c.maxEventBytes = nil
        #expect(c == a)  // equal by fields, not by storage
        #expect(b.secret == "other")
    }

    @Test func everyFieldCountsInEquality() {
        let base = App(id: "1", key: "k", secret: "s")
        var changes: [(inout App) -> Void] = [
            { $0.id = "2" }, { $0.key = "x" }, { $0.secret = "x" }, { $0.token = "x" }, { $0.enabled = false },
            { $0.clientEvents = false }, { $0.clientEventsPerSecond = 1 }, { $0.maxConnections = 1 },
            { $0.maxEventBytes = 1 }, { $0.previousSecret = "p" }, { $0.previousSecretUntil = 1 },
        ]
        changes.append { $0.origins = OriginPolicy() }
        changes.append { $0.webhooks = [Webhook(url: "http://127.0.0.1:1/hook")] }
        for (i, change) in changes.enumerated() {
            var b = base
            change(&b)
            #expect(b != base, "change \(i)")
            #expect(base == App(id: "1", key: "k", secret: "s"), "change \(i) reached the original")
        }
    }
}
