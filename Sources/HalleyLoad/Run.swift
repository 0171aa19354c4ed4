#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

/// A measured window: times and CPU counters at its start and end.
struct Window {
    var t0: Int64 = 0, t1: Int64 = 0
    var cpu0 = (user: 0.0, system: 0.0), cpu1 = (user: 0.0, system: 0.0)
    var server0: Double? = nil, server1: Double? = nil
    var cores0: [(Int, Int)] = [], cores1: [(Int, Int)] = []
    var soft0: [Int: Double] = [:], soft1: [Int: Double] = [:]
    var seconds: Double { Double(t1 - t0) / 1e9 }
}

/// The runs of each mode, and the measured windows.
extension Load {
    // MARK: measuring

    /// Runs the loop for --duration seconds (while `condition` holds), counting.
    func window(while condition: () -> Bool = { true }) -> Window {
        var w = Window()
        let server = { self.o.serverPids.isEmpty ? nil : processesCPUSeconds(self.o.serverPids) }
        w.server0 = server()
        w.cores0 = coreTimes()
        w.soft0 = softirq.compactMapValues { processesCPUSeconds([$0]) }
        w.cpu0 = cpuSeconds()
        st.pointee.windowCount = 0
        st.pointee.measuring = true
        w.t0 = monotonicNanos()
        runUntil(w.t0 + Int64(o.duration * 1e9), while: condition)
        w.t1 = monotonicNanos()
        st.pointee.measuring = false
        w.cpu1 = cpuSeconds()
        w.cores1 = coreTimes()
        w.soft1 = softirq.compactMapValues { processesCPUSeconds([$0]) }
        w.server1 = server()
        return w
    }

    /// The CPU fields of a result line, and `flags`: which side used its core (`closedLoop`:
    /// server >= 85%, tool >= 90%), a latency phase's server over 60%, and `disturbed` when a
    /// benchmark core was busier than the server (or this tool) and its softirq thread there.
    func cpuFields(_ w: Window, count: Int, unit: String, closedLoop: Bool, flags extra: [String] = []) -> String {
        let secs = w.seconds
        let user = w.cpu1.user - w.cpu0.user, sys = w.cpu1.system - w.cpu0.system
        let cp = 100 * (user + sys) / secs
        var line = " client_cpu_pct=\(fixed(cp, 1)) client_user_s=\(fixed(user, 2)) client_sys_s=\(fixed(sys, 2))"
        var sp: Double? = nil
        if let a = w.server0, let b = w.server1 {
            sp = 100 * (b - a) / secs
            line += " server_cpu_s=\(fixed(b - a, 2)) server_cpu_pct=\(fixed(sp!, 1))"
            line += " \(unit)_per_server_cpu_s=\(b > a ? fixed(Double(count) / (b - a), 0) : "inf")"
        } else if !o.serverPids.isEmpty {
            line += " server_cpu_s=? server_cpu_pct=? \(unit)_per_server_cpu_s=?"
        }
        var busy: [Int: Double] = [:]
        if w.cores0.count == w.cores1.count {
            for (k, (a, b)) in zip(w.cores0, w.cores1).enumerated() where b.0 > a.0 {
                busy[k] = 100 * Double((b.0 - a.0) - (b.1 - a.1)) / Double(b.0 - a.0)
            }
            line += " core_busy_pct=" + busy.keys.sorted().map { "\($0):\(Int(busy[$0]!))" }.joined(separator: ",")
        }
        let soft = w.soft1.compactMap { k, v in w.soft0[k].map { (k, 100 * (v - $0) / secs) } }
        if !soft.isEmpty {
            line +=
                " ksoftirqd_pct="
                + soft.sorted { $0.0 < $1.0 }.map { "\($0.0):\(fixed($0.1, 1))" }.joined(separator: ",")
        }
        var flags = extra
        if closedLoop {
            let s = (sp ?? 0) >= 85, t = cp >= 90
            flags.append(s && t ? "both-busy" : s ? "server-bound" : t ? "tool-bound" : "not-saturated")
        } else {
            if let s = sp, s > 60 { flags.append("server-over-60%") }
            if cp >= 90 { flags.append("tool-bound") }  // an open loop the tool may not have kept
        }
        // Another process on a benchmark core: busier than what ran there by more than 10 points.
        let softBy = Dictionary(soft, uniquingKeysWith: { a, _ in a })
        for (pid, pct) in [(o.serverPids.first, sp ?? 0), (getpid(), cp)] {
            if let p = pid, let f = procStat(p), let core = Int(f[36]), let b = busy[core],
                b > pct + (softBy[core] ?? 0) + 10
            {
                flags.append("disturbed:core\(core):\(Int(b))%")
            }
        }
        return line + " flags=" + (flags.isEmpty ? "-" : flags.joined(separator: ","))
    }

    func runEcho() -> Int32 {
        let s = st
        let tOpen = monotonicNanos()
        openMore()
        runUntil(tOpen + 60_000_000_000) { s.pointee.ready + s.pointee.failed < n }
        let ext = seenExtensions.map { "\($0.value) x \($0.key)" }.sorted().joined(separator: "; ")
        warn(
            "\(s.pointee.ready) of \(n) connections open in \(fixed(Double(monotonicNanos() - tOpen) / 1e9, 2)) s (\(ext))"
        )
        if o.tls { warn("TLS: \(seenTLS.map { "\($0.value) x \($0.key)" }.sorted().joined(separator: "; "))") }
        if s.pointee.ready < n { return 1 }
        if o.deflate { warn("\(pool.count * pool.size) B of payloads deflate to \(pool.deflatedBytes) B") }

        s.pointee.sending = true
        let start = monotonicNanos()
        if o.openLoop {
            for i in 0..<n where conns[i].state == .open { pushIdle(i) }
            s.pointee.scheduleStart = start
            echoTimer(true)
        } else {
            for i in 0..<n where conns[i].state == .open { sendNext(i, start) }
        }
        runUntil(start + Int64(o.warmup * 1e9)) { true }
        let warmupEchoes = s.pointee.echoes
        let (scheduled0, missed0) = (s.pointee.scheduled, s.pointee.missed)
        let (ticks0, late0) = (s.pointee.ticks, s.pointee.lateTicks)
        let w = window()
        s.pointee.sending = false
        if o.openLoop { echoTimer(false) }
        let messages = s.pointee.windowCount
        let (scheduled, missed) = (s.pointee.scheduled - scheduled0, s.pointee.missed - missed0)
        let (ticks, late) = (s.pointee.ticks - ticks0, s.pointee.lateTicks - late0)

        // The echoes still in flight, then a proper close of every connection.
        runUntil(w.t1 + 5_000_000_000) { s.pointee.outstanding > 0 }
        let unanswered = s.pointee.outstanding
        if unanswered > 0 {
            s.pointee.errors += 1
            warn("\(unanswered) echoes did not arrive within 5 s after the window")
        }
        for i in 0..<n where conns[i].state == .open {
            sendFrame(i, 8, [0x03, 0xE8])
            if conns[i].fd >= 0 { conns[i].state = .closing }
        }
        runUntil(monotonicNanos() + 5_000_000_000) { s.pointee.live > 0 }
        let closeReplies = (0..<n).filter { conns[$0].gotClose }.count
        for i in 0..<n { closeConn(i) }

        var line = "messages=\(messages) seconds=\(fixed(w.seconds, 3))"
        line +=
            " msgs_per_sec=\(fixed(Double(messages) / w.seconds, 1)) \(lat.fields) connections=\(n) size=\(pool.size)"
        line += " type=\(o.binary ? "binary" : "text") deflate=\(o.deflate ? "offered" : "off")"
        line += " compressed_echoes=\(s.pointee.compressedEchoes) sent=\(s.pointee.sent)"
        line += " echoes=\(s.pointee.echoes) warmup_echoes=\(warmupEchoes) errors=\(s.pointee.errors)"
        line += " unanswered=\(unanswered) pings=\(s.pointee.pings) close_replies=\(closeReplies)"
        line += " eof_without_close=\(s.pointee.eofWithoutClose) close_resets=\(s.pointee.resets)"
        if o.tls { line += " tls=1 tls_tickets=\(Self.tickets)" }
        var flags: [String] = []
        if o.openLoop {
            line += " rate=\(fixed(o.rate, 1)) scheduled=\(scheduled) missed=\(missed)"
            line += " ticks=\(ticks) late_ticks=\(late)"
            // More than 0.5% of the schedule found no free connection: the rate was not held.
            if missed * 200 > scheduled { flags.append("rate-not-met") }
            // More than 1% of the bursts merged with the next (the tool woke late): the bursts
            // were not the same for every target.
            if late * 100 > ticks { flags.append("tool-late") }
        }
        writeFD(1, line + cpuFields(w, count: messages, unit: "msgs", closedLoop: !o.openLoop, flags: flags) + "\n")
        return s.pointee.errors > 0 ? 1 : 0
    }

    func runHandshakes() -> Int32 {
        let s = st
        let t = monotonicNanos()
        for i in 0..<n { _ = startConnect(i) }
        runUntil(t + Int64(o.warmup * 1e9)) { true }
        let w = window()
        running = false
        runUntil(w.t1 + 5_000_000_000) { s.pointee.live > 0 }
        let unfinished = s.pointee.live
        for i in 0..<n { closeConn(i) }
        let h = s.pointee.windowCount
        var line =
            "handshakes=\(h) seconds=\(fixed(w.seconds, 3)) handshakes_per_sec=\(fixed(Double(h) / w.seconds, 1))"
        line +=
            " \(lat.fields) connections=\(n) total_handshakes=\(s.pointee.handshakes) completed=\(s.pointee.completed)"
        line += " resumed=\(s.pointee.resumed) tickets_received=\(Self.tickets) resets=\(s.pointee.resets)"
        line += " failures=\(s.pointee.errors) timeouts=\(s.pointee.timeouts) unfinished=\(unfinished)"
        line += cpuFields(w, count: h, unit: "handshakes", closedLoop: true)
        line += " tls=" + seenTLS.keys.sorted().map { String($0.map { $0 == " " ? "_" : $0 }) }.joined(separator: ",")
        writeFD(1, line + "\n")
        let bad = s.pointee.errors > 0 || s.pointee.timeouts > 0 || s.pointee.resumed > 0 || h == 0
        if bad {
            warn("\(s.pointee.errors) failure(s), \(s.pointee.timeouts) timeout(s), \(s.pointee.resumed) resumed")
        }
        return bad ? 1 : 0
    }

    func runFanout() -> Int32 {
        let s = st
        let what = "\(o.server.rawValue) \(o.transport.rawValue)"
        // 1. Publishers, then every subscriber.
        for i in n..<total where !startConnect(i) { return 1 }
        let tOpen = monotonicNanos()
        runUntil(tOpen + 10_000_000_000) { s.pointee.freeCount < o.publishers && s.pointee.errors == 0 }
        guard s.pointee.freeCount == o.publishers else {
            warn("\(s.pointee.freeCount) of \(o.publishers) publisher connections open after 10 s")
            return 1
        }
        openMore()
        runUntil(tOpen + 60_000_000_000) { s.pointee.ready + s.pointee.failed < n }
        let on = o.subServers.isEmpty ? "" : " on \(o.subServers.count) servers"
        let took = fixed(Double(monotonicNanos() - tOpen) / 1e9, 2)
        warn("\(s.pointee.ready) of \(n) \(what) subscribers\(on) in \(took) s")
        if s.pointee.ready < n { return closeAll(1) }

        // 2. Sync: a message every 50 ms until every subscriber has had one, then the last one
        // everywhere (earlier ones may not reach subscribers that were not listening yet).
        startPhase(.sync)
        s.pointee.interval = 50_000_000
        s.pointee.nextDue = monotonicNanos()
        let tSync = monotonicNanos()
        runUntil(tSync + 30_000_000_000) { s.pointee.gotFirst < n && s.pointee.errors == 0 }
        s.pointee.mode = .off
        runUntil(monotonicNanos() + 5_000_000_000) {
            s.pointee.freeCount < livePublishers() || (0..<n).contains { conns[$0].expect != s.pointee.nextSeq }
        }
        warn("sync: \(s.pointee.gotFirst) of \(n) subscribers receiving after \(s.pointee.nextSeq) messages")
        if s.pointee.gotFirst < n { return closeAll(1) }

        // 3. The phases.
        for phase in o.phases {
            let before = s.pointee
            let w: Window
            var extra = ""
            if phase == "latency" {
                startPhase(.rate)
                startRange()
                s.pointee.interval = max(1, Int64(1e9 / o.rate))
                s.pointee.nextDue = monotonicNanos()
                w = window { s.pointee.errors == before.errors }
                extra =
                    " rate=\(fixed(o.rate, 1)) pub_behind_max_us=\(s.pointee.pubBehindMax / 1000) pub_late=\(s.pointee.pubLate)"
            } else {
                startPhase(.window)
                runUntil(monotonicNanos() + Int64(o.warmup * 1e9)) { s.pointee.errors == before.errors }
                startRange()
                w = window { s.pointee.errors == before.errors }
                extra = " window=\(o.window)"
            }
            let published = s.pointee.published - before.published, deliveries = s.pointee.windowCount
            s.pointee.mode = .off
            s.pointee.rangeTo = s.pointee.nextSeq
            // The answers to the publishers and every message of the range everywhere, 5 s at most.
            let expected = s.pointee.target * Int(s.pointee.rangeTo - s.pointee.rangeFrom)
            let tDrain = monotonicNanos()
            runUntil(tDrain + 5_000_000_000) {
                s.pointee.freeCount < livePublishers() || s.pointee.oldest < s.pointee.nextSeq
                    || s.pointee.rangeReceived < expected
            }
            let received = (0..<n).reduce(0) { $0 + conns[$1].inRange }
            let live = (0..<n).filter { conns[$0].fd >= 0 }.count
            let secs = w.seconds
            var line = "phase=\(phase) server=\(o.server.rawValue) transport=\(o.transport.rawValue) subscribers=\(n)"
            line += " sub_servers=\(max(1, o.subServers.count))"
            line +=
                " size=\(o.size) publishers=\(o.publishers)\(extra) seconds=\(fixed(secs, 3)) published=\(published)"
            line += " publishes_per_sec=\(fixed(Double(published) / secs, 1)) deliveries=\(deliveries)"
            line +=
                " deliveries_per_sec=\(fixed(Double(deliveries) / secs, 0)) messages=\(s.pointee.rangeTo - s.pointee.rangeFrom)"
            line += " expected=\(expected) received=\(received) missing=\(expected - received) \(lat.fields)"
            line += " stalls=\(s.pointee.stalls) drain_s=\(fixed(Double(monotonicNanos() - tDrain) / 1e9, 2))"
            line += " dups=\(s.pointee.dups - before.dups) skipped=\(s.pointee.skipped - before.skipped)"
            line += " reordered=\(s.pointee.reordered - before.reordered) other=\(s.pointee.other - before.other)"
            line +=
                " reconnects=\(s.pointee.reconnects - before.reconnects) rotations=\(s.pointee.rotations - before.rotations)"
            line += " pings=\(s.pointee.pings) errors=\(s.pointee.errors - before.errors) live=\(live)"
            let late = phase == "latency" && s.pointee.pubLate * 100 > published ? ["publisher-behind"] : []
            writeFD(
                1,
                line + cpuFields(w, count: deliveries, unit: "deliveries", closedLoop: phase == "capacity", flags: late)
                    + "\n")
            if expected != received || s.pointee.errors != before.errors || s.pointee.dups != before.dups || live < n {
                warn(
                    "phase \(phase): \(expected - received) of \(expected) deliveries missing, \(s.pointee.dups - before.dups) duplicates, \(s.pointee.errors - before.errors) errors, \(n - live) subscribers gone"
                )
                if !o.subServers.isEmpty {
                    let each = Int(s.pointee.rangeTo - s.pointee.rangeFrom)
                    let missing = (1..<servers.count).map { k in
                        (0..<n).filter { server($0) == k }.reduce(0) { $0 + each - conns[$1].inRange }
                    }
                    warn("missing per --sub-url server: \(missing.map(String.init).joined(separator: ", "))")
                }
                return closeAll(1)
            }
        }
        if s.pointee.foreign > 0 { warn("\(s.pointee.foreign) messages this run did not publish (ignored)") }
        return closeAll(s.pointee.errors > 0 ? 1 : 0)
    }

    func startPhase(_ mode: PublishMode) {
        st.pointee.oldest = st.pointee.nextSeq
        st.pointee.target = st.pointee.ready
        st.pointee.mode = mode
    }

    /// Counting from now: deliveries of the messages published from now on, and their latency.
    func startRange() {
        st.pointee.rangeFrom = st.pointee.nextSeq
        st.pointee.rangeTo = .max
        st.pointee.rangeReceived = 0
        st.pointee.pubLate = 0
        st.pointee.pubBehindMax = 0
        st.pointee.stalls = 0
        for i in 0..<n { conns[i].inRange = 0 }
        lat.reset()
    }

    func livePublishers() -> Int { (n..<total).filter { conns[$0].fd >= 0 }.count }

    /// WebSocket subscribers send a close frame and wait (2 s at most) for the server to close;
    /// HTTP connections just close.
    func closeAll(_ status: Int32) -> Int32 {
        st.pointee.mode = .off
        for i in 0..<total where conns[i].fd >= 0 {
            if conns[i].kind == .ws && conns[i].state == .open {
                sendFrame(i, 8, [0x03, 0xE8])
                if conns[i].fd >= 0 { conns[i].state = .closing }
            } else {
                closeConn(i)
            }
        }
        runUntil(monotonicNanos() + 2_000_000_000) { st.pointee.live > 0 }
        for i in 0..<total { closeConn(i) }
        return status
    }
}
