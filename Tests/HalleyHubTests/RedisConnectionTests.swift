#if canImport(Glibc)
import Glibc
#endif
import Testing
import HalleyCore
import HalleyLoop
import HalleyProtocol
@testable import HalleyHub

@Suite struct RedisURLTests {
    @Test func parsesEveryPart() throws {
        let u = try RedisURL("redis://alice:s3cr:et@10.0.0.5:6380/2")
        #expect(u.host == "10.0.0.5" && u.port == 6380 && u.user == "alice" && u.password == "s3cr:et" && u.db == 2)
        #expect(u.description == "redis://alice:***@10.0.0.5:6380/2")
        let d = try RedisURL("redis://localhost")
        #expect(d.host == "localhost" && d.port == 6379 && d.user == nil && d.password == nil && d.db == 0)
        let p = try RedisURL("redis://:pw@h:1/")
        #expect(p.user == nil && p.password == "pw" && p.port == 1)
        let six = try RedisURL("redis://[::1]:7000/0")
        #expect(six.host == "::1" && six.port == 7000 && six.description == "redis://[::1]:7000/0")
        for bad in [
            "rediss://h:6379", "http://h", "redis://", "redis://h:0", "redis://h:70000", "redis://h:x", "redis://h/db",
            "redis://[::1",
        ] {
            #expect(throws: RedisURL.ParseError.self, "\(bad)") { try RedisURL(bad) }
        }
    }
}

/// A redis-server of the machine's (Debian `redis-server`; `Scripts/test.sh` installs it) on a
/// free port, with the given extra arguments.
final class RedisServer {
    let port: Int
    var pid: pid_t = 0
    let args: [String]

    init(_ extra: [String] = []) throws {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) }
        }
        port = Int(UInt16(bigEndian: a.sin_port))
        close(s)
        args = ["redis-server", "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extra
        try start()
    }

    func start() throws {
        var cargs = args.map { strdup($0) } + [nil]
        defer { for p in cargs { free(p) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let rc = posix_spawnp(&pid, "redis-server", &actions, nil, &cargs, environ)
        guard rc == 0 else { throw IOError(errno: rc, function: "posix_spawnp redis-server") }
        // Ready when it accepts a connection.
        for _ in 0..<200 {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = UInt16(port).bigEndian
            a.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok =
                withUnsafePointer(to: &a) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                } == 0
            close(s)
            if ok { return }
            usleep(20_000)
        }
        throw IOError(errno: ETIMEDOUT, function: "redis-server did not start")
    }

    func kill9() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        pid = 0
    }

    deinit { kill9() }
}

/// The connection on a running loop; the test's thread waits for what the loop records.
final class RedisProbe: @unchecked Sendable {  // fields written on the loop, read under `lock`
    let loop: EventLoop
    let thread: pthread_t
    let lock = Locked(Record())
    var conn: RedisConnection!

    struct Record {
        var states: [Bool] = []
        var replies: [Result<RESPValue, RedisError>] = []
        var pushes: [RESPValue] = []
    }

    init(url: RedisURL, options: RedisConnection.Options = .init()) throws {
        loop = try EventLoop(index: 0, maxDescriptors: 256)
        thread = loop.startThread()
        let box = UncheckedSendable(self)
        onLoop {
            let p = box.value
            let c = RedisConnection(loop: p.loop, url: url, options: options)
            c.onStateChange = { up, _ in p.lock.withLock { $0.states.append(up) } }
            c.onPush = { v in p.lock.withLock { $0.pushes.append(v) } }
            p.conn = c
            c.start()
        }
    }

    func onLoop(_ body: @escaping () -> Void) {
        let done = Locked(false)
        let b = UncheckedSendable(body)
        loop.execute {
            b.value(); done.withLock { $0 = true }
        }
        while !done.withLock({ $0 }) { usleep(1000) }
    }

    func send(_ args: [String]) {
        let box = UncheckedSendable(self)
        onLoop {
            box.value.conn.send(args.map { Array($0.utf8) }) { r in box.value.lock.withLock { $0.replies.append(r) } }
        }
    }

    /// Waits up to `seconds` for `cond` on the record.
    @discardableResult
    func wait(_ seconds: Double = 5, _ cond: (Record) -> Bool) -> Bool {
        let end = Clock.monotonicMillis() + Int64(seconds * 1000)
        while Clock.monotonicMillis() < end {
            if lock.withLock({ cond($0) }) { return true }
            usleep(5000)
        }
        return false
    }

    var record: Record { lock.withLock { $0 } }
    var state: RedisConnection.State {
        let s = Locked(RedisConnection.State.connecting)
        let box = UncheckedSendable(self)
        onLoop {
            let st = box.value.conn.state; s.withLock { $0 = st }
        }
        return s.withLock { $0 }
    }

    func stop() {
        let box = UncheckedSendable(self)
        onLoop { box.value.conn.stop() }
        loop.stop()
        pthread_join(thread, nil)
    }
}

struct UncheckedSendable<T>: @unchecked Sendable {  // handed to the loop's thread, used there only
    let value: T
    init(_ v: T) { value = v }
}

/// The hub's Redis connection against a real redis-server: commands pipelined and answered in
/// order, RESP3 pub/sub pushes, AUTH (password and ACL user), a database, and a Redis restart:
/// commands in flight fail, new ones are refused while it is down, and it comes back by itself.
@Suite(.serialized) struct RedisConnectionTests {
    /// Skipped where there is no redis-server, unless HALLEY_REQUIRE_REDIS is set (the test
    /// command sets it, after installing redis-server): then a missing one fails.
    static let available = access("/usr/bin/redis-server", X_OK) == 0 || getenv("HALLEY_REQUIRE_REDIS") != nil

    @Test(.enabled(if: available)) func commandsArePipelinedAndAnsweredInOrder() throws {
        let r = try RedisServer()
        let p = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port))
        defer { p.stop() }
        #expect(p.wait { $0.states == [true] })
        p.send(["PING"])
        for _ in 0..<1000 { p.send(["INCR", "n"]) }
        p.send(["GET", "n"])
        p.send(["NOSUCHCOMMAND"])
        #expect(p.wait { $0.replies.count == 1003 })
        let got = p.record.replies
        #expect(got[0] == .success(.simple("PONG")))
        #expect(got[1...1000].map { try? $0.get() } == (1...1000).map { RESPValue.integer(Int64($0)) })
        #expect(got[1001] == .success(.bulk(Array("1000".utf8))))
        guard case .failure(.server(let e)) = got[1002] else { Issue.record("\(got[1002])"); return }
        #expect(e.hasPrefix("ERR unknown command"))
    }

    @Test(.enabled(if: available)) func pubSubMessagesComeAsPushes() throws {
        let r = try RedisServer()
        let sub = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port))
        let pub = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port))
        defer { sub.stop(); pub.stop() }
        #expect(sub.wait { $0.states == [true] } && pub.wait { $0.states == [true] })
        sub.send(["SUBSCRIBE", "news"])
        #expect(sub.wait { $0.pushes.count == 1 })  // the confirmation is a push in RESP3
        pub.send(["PUBLISH", "news", "hello\r\n\u{0}é"])
        #expect(pub.wait { $0.replies == [.success(.integer(1))] })
        #expect(sub.wait { $0.pushes.count == 2 })
        #expect(
            sub.record.pushes[1]
                == .push([
                    .bulk(Array("message".utf8)), .bulk(Array("news".utf8)), .bulk(Array("hello\r\n\u{0}é".utf8)),
                ]))
        // A command on the same connection still gets its own reply.
        sub.send(["PING"])
        #expect(sub.wait { $0.replies.count == 1 })
    }

    /// `SSUBSCRIBE` is answered by a push (or, refused, by an error): the command that waits for
    /// it is answered by that push and no other (a message is not an answer), and the replies of
    /// the commands around it stay matched.
    @Test(.enabled(if: available)) func aCommandAnsweredByAPushOrAnError() throws {
        let r = try RedisServer()
        let p = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port))
        defer { p.stop() }
        #expect(p.wait { $0.states == [true] })
        let box = UncheckedSendable(p)
        func subscribe(_ args: [String]) {
            p.onLoop {
                box.value.conn.send(args.map { Array($0.utf8) }, answeredBy: "ssubscribe") { r in
                    box.value.lock.withLock { $0.replies.append(r) }
                }
            }
        }
        p.send(["PING"])
        subscribe(["SSUBSCRIBE", "a"])
        p.send(["ECHO", "x"])
        subscribe(["SSUBSCRIBE"])  // refused: an error in place of the push
        p.send(["SPUBLISH", "a", "m"])
        #expect(p.wait { $0.replies.count == 5 })
        let got = p.record.replies
        #expect(got[0] == .success(.simple("PONG")))
        #expect(got[1] == .success(.push([.bulk(Array("ssubscribe".utf8)), .bulk(Array("a".utf8)), .integer(1)])))
        #expect(got[2] == .success(.bulk(Array("x".utf8))))
        guard case .failure(.server(let e)) = got[3] else { Issue.record("\(got[3])"); return }
        #expect(e.hasPrefix("ERR wrong number of arguments"))
        #expect(got[4] == .success(.integer(1)))
        #expect(p.wait { $0.pushes.count == 2 })  // the confirmation and the message, both to onPush
        #expect(
            p.record.pushes[1]
                == .push([.bulk(Array("smessage".utf8)), .bulk(Array("a".utf8)), .bulk(Array("m".utf8))]))
        #expect(p.state == .ready)
    }

    @Test(.enabled(if: available)) func authWithAPasswordAndAnACLUserAndADatabase() throws {
        let r = try RedisServer(["--requirepass", "pw", "--user", "alice", "on", ">apw", "~*", "&*", "+@all"])
        let wrong = try RedisProbe(url: RedisURL("redis://:nope@127.0.0.1:\(r.port)"))
        let pass = try RedisProbe(url: RedisURL("redis://:pw@127.0.0.1:\(r.port)/3"))
        let alice = try RedisProbe(url: RedisURL("redis://alice:apw@127.0.0.1:\(r.port)"))
        defer { wrong.stop(); pass.stop(); alice.stop() }
        #expect(pass.wait { $0.states == [true] } && alice.wait { $0.states == [true] })
        pass.send(["SET", "k", "db3"])
        alice.send(["GET", "k"])  // database 0: not there
        #expect(pass.wait { $0.replies == [.success(.simple("OK"))] })
        #expect(alice.wait { $0.replies == [.success(.null)] })
        usleep(300_000)
        #expect(wrong.record.states.isEmpty)
        guard case .down(let why) = wrong.state else { Issue.record("a wrong password connected"); return }
        #expect(why.contains("WRONGPASS"))
        wrong.send(["PING"])
        #expect(wrong.wait { $0.replies.count == 1 })
        guard case .failure(.unavailable) = wrong.record.replies[0] else {
            Issue.record("\(wrong.record.replies)"); return
        }
    }

    @Test(.enabled(if: available)) func aRedisRestartIsSurvived() throws {
        let r = try RedisServer()
        var o = RedisConnection.Options()
        o.maxBackoffMillis = 200
        let p = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port), options: o)
        defer { p.stop() }
        #expect(p.wait { $0.states == [true] })
        // A command Redis never answers (it is stopped mid-way): it fails, not hangs.
        p.send(["BLPOP", "never", "0"])
        usleep(100_000)
        r.kill9()
        #expect(p.wait { $0.states == [true, false] && $0.replies.count == 1 })
        guard case .failure(.connectionLost) = p.record.replies[0] else { Issue.record("\(p.record.replies)"); return }
        p.send(["PING"])  // while down: refused at once, never queued
        #expect(p.wait { $0.replies.count == 2 })
        guard case .failure(.unavailable) = p.record.replies[1] else { Issue.record("\(p.record.replies)"); return }
        try r.start()
        #expect(p.wait(10) { $0.states == [true, false, true] })
        p.send(["PING"])
        #expect(p.wait { $0.replies.count == 3 && $0.replies[2] == .success(.simple("PONG")) })
    }

    @Test(.enabled(if: available)) func aReplyThatNeverComesCountsAsALostConnection() throws {
        let r = try RedisServer()
        var o = RedisConnection.Options()
        o.commandTimeoutMillis = 500
        let p = try RedisProbe(url: RedisURL(host: "127.0.0.1", port: r.port), options: o)
        defer { p.stop() }
        #expect(p.wait { $0.states == [true] })
        kill(r.pid, SIGSTOP)  // Redis stalls (the TCP connection stays up)
        p.send(["PING"])
        #expect(p.wait(5) { $0.replies.count == 1 && $0.states.starts(with: [true, false]) })
        guard case .failure(.connectionLost(let why)) = p.record.replies[0] else {
            Issue.record("\(p.record.replies)"); return
        }
        #expect(why.contains("no reply within 500 ms"))
        kill(r.pid, SIGCONT)
        #expect(p.wait(10) { $0.states.last == true })  // and it comes back
    }
}
