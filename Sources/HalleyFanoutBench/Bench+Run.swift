#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// The run: open, sync, the phases, the report.
extension Bench {
    // MARK: publishing schedule

    /// Publishes what is due (rate, sync) or allowed (window); gives up on messages that have
    /// not reached every subscriber for --loss-timeout seconds.
    @inline(__always)
    func tick(_ now: Int64) {
        let s = st
        switch s.pointee.mode {
        case .off:
            break
        case .sync, .rate:
            while s.pointee.nextDue <= now && s.pointee.freeCount > 0 {
                let behind = monotonicNanos() - s.pointee.nextDue
                if behind > s.pointee.pubBehindMax { s.pointee.pubBehindMax = behind }
                if behind > s.pointee.interval { s.pointee.pubLate += 1 }
                publish()
                s.pointee.nextDue += s.pointee.interval
                if s.pointee.nextSeq - s.pointee.oldest >= Int64(Self.ringSize - 2) {
                    s.pointee.stalls += 1
                    s.pointee.oldest += 1
                    advance()
                }
            }
            if s.pointee.nextDue > now && s.pointee.timerArmedFor != s.pointee.nextDue {
                armTimer(s.pointee.nextDue)
            }
        case .window:
            while s.pointee.freeCount > 0 && s.pointee.nextSeq - s.pointee.oldest < Int64(s.pointee.window) {
                publish()
            }
        }
        if s.pointee.oldest < s.pointee.nextSeq {
            let lossNs = Int64(o.lossTimeout * 1e9)
            while s.pointee.oldest < s.pointee.nextSeq && now - ringSent[Int(s.pointee.oldest & Self.ringMask)] > lossNs
            {
                s.pointee.stalls += 1
                s.pointee.oldest += 1
                advance()
            }
        }
    }

    func armTimer(_ at: Int64) {
        var spec = itimerspec()
        spec.it_value.tv_sec = Int(at / 1_000_000_000)
        spec.it_value.tv_nsec = Int(at % 1_000_000_000)
        if timerfd_settime(timerfd, Int32(TFD_TIMER_ABSTIME), &spec, nil) == 0 {
            st.pointee.timerArmedFor = at
        }
    }

    /// Runs the loop until `deadline` or until `condition` is false.
    func runUntil(_ deadline: Int64, while condition: () -> Bool) {
        let pace = Int64(o.readIntervalUs) * 1000
        var lastPump: Int64 = 0
        while true {
            var now = monotonicNanos()
            tick(now)
            if !condition() || now >= deadline { return }
            if pace > 0 && st.pointee.mode == .window {
                let wake = min(lastPump + pace, deadline)
                if wake > now {
                    var ts = timespec(tv_sec: Int(wake / 1_000_000_000), tv_nsec: Int(wake % 1_000_000_000))
                    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil)
                    now = monotonicNanos()
                }
                lastPump = now
            }
            if o.busyPoll && st.pointee.mode == .window {
                // Empty polls are the tool's spare time.
                if !pump(0) { st.pointee.idleNs += monotonicNanos() - now }
                continue
            }
            let left = min(deadline - now, 100_000_000)
            pump(Int32((left + 999_999) / 1_000_000))
        }
    }

    func startPhase(_ mode: PublishMode) {
        let s = st
        s.pointee.oldest = s.pointee.nextSeq
        s.pointee.target = s.pointee.ready
        s.pointee.mode = mode
    }

    /// Counting from now: deliveries of messages published from now on, and their latency.
    func startRange() {
        let s = st
        s.pointee.rangeFrom = s.pointee.nextSeq
        s.pointee.rangeTo = .max
        for i in 0..<n { conns[i].inRange = 0 }
        s.pointee.rangeReceived = 0
        lat.reset()
        pubLat.reset()
        s.pointee.latCount = 0
        s.pointee.latSum = 0
        s.pointee.latMax = 0
        s.pointee.pubCount = 0
        s.pointee.pubSum = 0
        s.pointee.pubMax = 0
        s.pointee.pubBehindMax = 0
        s.pointee.pubLate = 0
        s.pointee.pub202 = 0
        s.pointee.stalls = 0
    }

    /// Publishing stopped: waits for the answers to the publishers and for every subscriber to
    /// have every message of the range, at most --drain-timeout seconds.
    func drain() -> Double {
        let s = st
        s.pointee.mode = .off
        let expected = s.pointee.target * Int(s.pointee.rangeTo - s.pointee.rangeFrom)
        let t = monotonicNanos()
        runUntil(t + Int64(o.drainTimeout * 1e9)) {
            s.pointee.freeCount < livePublishers() || s.pointee.oldest < s.pointee.nextSeq
                || s.pointee.rangeReceived < expected
        }
        return Double(monotonicNanos() - t) / 1e9
    }

    func livePublishers() -> Int {
        var k = 0
        for i in n..<total where conns[i].fd >= 0 { k += 1 }
        return k
    }

    struct Window {
        var t0: Int64 = 0
        var t1: Int64 = 0
        var cpu0 = (user: 0.0, system: 0.0)
        var cpu1 = (user: 0.0, system: 0.0)
        var server0: Double? = nil
        var server1: Double? = nil
        var cores0: [(Int, Int)] = []
        var cores1: [(Int, Int)] = []
        var deliveries0 = 0
        var published0 = 0
        var softirq0: [Double?] = []
        var softirq1: [Double?] = []
        var seconds: Double { Double(t1 - t0) / 1e9 }
    }

    func openWindow() -> Window {
        var w = Window()
        w.server0 = o.serverPids.isEmpty ? nil : processesCPUSeconds(o.serverPids)
        w.cores0 = coreTimes()
        w.softirq0 = softirqPids.map { processCPUSeconds($0.1) }
        w.cpu0 = cpuSeconds()
        w.published0 = st.pointee.published
        st.pointee.windowDeliveries = 0
        st.pointee.idleNs = 0
        st.pointee.measuring = true
        w.t0 = monotonicNanos()
        return w
    }

    func closeWindow(_ w: inout Window) {
        w.t1 = monotonicNanos()
        st.pointee.measuring = false
        w.cpu1 = cpuSeconds()
        w.cores1 = coreTimes()
        w.softirq1 = softirqPids.map { processCPUSeconds($0.1) }
        w.server1 = o.serverPids.isEmpty ? nil : processesCPUSeconds(o.serverPids)
    }

    // MARK: the run

    func run() -> Int32 {
        halley_ignore_sigpipe()
        var rl = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
            getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &rl)
        }
        if Int(rl.rlim_cur) < total + 16 {
            warn("RLIMIT_NOFILE is \(rl.rlim_cur): too low for \(total) connections")
            return 1
        }
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(o.port).bigEndian)
        guard inet_pton(AF_INET, o.host, &addr.sin_addr) == 1 else {
            warn("--host '\(o.host)' is not an IPv4 address")
            return 2
        }
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_ADD, timerfd, Self.evIn, Self.timerId)
        let s = st
        let what =
            "\(o.server.rawValue) \(o.transport == .ws ? "WebSocket" : o.transport == .longpoll ? "long-poll" : "xhr_streaming")"

        // 1. Publishers, then every subscriber.
        for i in n..<total where !startConnect(i) { return 1 }
        let tOpen = monotonicNanos()
        runUntil(tOpen + 10_000_000_000) { s.pointee.freeCount < o.publishers && s.pointee.errors == 0 }
        if s.pointee.freeCount < o.publishers {
            warn("\(s.pointee.freeCount) of \(o.publishers) publisher connections open after 10 s")
            return 1
        }
        openMore()
        runUntil(tOpen + Int64(o.connectTimeout * 1e9)) { s.pointee.ready + s.pointee.failed < n }
        let openSeconds = Double(monotonicNanos() - tOpen) / 1e9
        warn("\(s.pointee.ready) of \(n) \(what) subscribers subscribed in \(fixed(openSeconds, 2)) s")
        if s.pointee.ready < n {
            warn(
                "\(n - s.pointee.ready) subscribers did not subscribe (\(s.pointee.failed) failed, \(s.pointee.connecting) still opening)"
            )
            closeAll()
            return 1
        }

        // 2. Sync: a message every 50 ms until every subscriber has had one.
        startPhase(.sync)
        s.pointee.interval = 50_000_000
        s.pointee.nextDue = monotonicNanos()
        let tSync = monotonicNanos()
        runUntil(tSync + Int64(o.syncTimeout * 1e9)) { s.pointee.gotFirst < n && s.pointee.errors == 0 }
        // Then the answers to the publishers, and the last sync message everywhere (earlier
        // ones may never reach subscribers that were not listening yet).
        s.pointee.mode = .off
        let tSettle = monotonicNanos()
        runUntil(tSettle + Int64(o.drainTimeout * 1e9)) {
            if s.pointee.freeCount < livePublishers() { return true }
            for i in 0..<n where conns[i].expect != s.pointee.nextSeq { return true }
            return false
        }
        var behind = 0
        for i in 0..<n where conns[i].expect != s.pointee.nextSeq { behind += 1 }
        if behind > 0 { warn("sync: \(behind) subscribers still without the last sync message") }
        let syncSeconds = Double(monotonicNanos() - tSync) / 1e9
        warn(
            "sync: every subscriber receiving after \(s.pointee.nextSeq) messages, \(fixed(syncSeconds, 2)) s"
                + (s.pointee.gotFirst < n ? ": \(n - s.pointee.gotFirst) subscribers got none" : ""))
        if s.pointee.gotFirst < n {
            closeAll()
            return 1
        }

        // 3. The phases.
        var failed = false
        for phase in o.phases {
            let errors0 = s.pointee.errors
            let dups0 = s.pointee.dups
            let skipped0 = s.pointee.skipped
            let reordered0 = s.pointee.reordered
            let other0 = s.pointee.other
            let reconnects0 = s.pointee.reconnects
            let rotations0 = s.pointee.rotations
            var w: Window
            var extra = ""
            if phase == "latency" {
                startPhase(.rate)
                startRange()
                s.pointee.interval = max(1, Int64(1e9 / o.rate))
                s.pointee.nextDue = monotonicNanos()
                w = openWindow()
                runUntil(w.t0 + Int64(o.duration * 1e9)) { s.pointee.errors == errors0 }
                closeWindow(&w)
                extra =
                    " rate=\(fixed(o.rate, 1)) pub_behind_max_us=\(s.pointee.pubBehindMax / 1000) pub_late=\(s.pointee.pubLate)"
            } else {
                startPhase(.window)
                let tw = monotonicNanos()
                runUntil(tw + Int64(o.warmup * 1e9)) { s.pointee.errors == errors0 }
                startRange()
                w = openWindow()
                runUntil(w.t0 + Int64(o.duration * 1e9)) { s.pointee.errors == errors0 }
                closeWindow(&w)
                extra = " window=\(o.window) read_interval_us=\(o.readIntervalUs)"
            }
            s.pointee.mode = .off
            s.pointee.rangeTo = s.pointee.nextSeq
            let windowDeliveries = s.pointee.windowDeliveries
            let windowPublished = s.pointee.published - w.published0
            let drainSeconds = drain()
            let messages = Int(s.pointee.rangeTo - s.pointee.rangeFrom)
            var received = 0
            var live = 0
            for i in 0..<n {
                received += conns[i].inRange
                if conns[i].fd >= 0 { live += 1 }
            }
            let expected = messages * s.pointee.target
            let missing = expected - received
            let cpuUser = w.cpu1.user - w.cpu0.user, cpuSys = w.cpu1.system - w.cpu0.system
            let secs = w.seconds
            let count = s.pointee.latCount
            var line = "phase=\(phase) server=\(o.server.rawValue) transport=\(o.transport.rawValue) subscribers=\(n)"
            line += " size=\(o.size) publishers=\(o.publishers)\(extra) seconds=\(fixed(secs, 3))"
            line += " published=\(windowPublished) publishes_per_sec=\(fixed(Double(windowPublished) / secs, 1))"
            line += " deliveries=\(windowDeliveries) deliveries_per_sec=\(fixed(Double(windowDeliveries) / secs, 0))"
            line += " messages=\(messages) expected=\(expected) received=\(received) missing=\(missing)"
            line += " p50_us=\(lat.percentile(0.5, total: count)) p90_us=\(lat.percentile(0.9, total: count))"
            line += " p99_us=\(lat.percentile(0.99, total: count)) p999_us=\(lat.percentile(0.999, total: count))"
            line +=
                " max_us=\(s.pointee.latMax / 1000) mean_us=\(fixed(count > 0 ? Double(s.pointee.latSum) / Double(count) / 1000 : 0, 1))"
            line +=
                " pub_p50_us=\(pubLat.percentile(0.5, total: s.pointee.pubCount)) pub_p99_us=\(pubLat.percentile(0.99, total: s.pointee.pubCount))"
            line += " pub_max_us=\(s.pointee.pubMax / 1000) pub_202=\(s.pointee.pub202) stalls=\(s.pointee.stalls)"
            line +=
                " drain_s=\(fixed(drainSeconds, 2)) dups=\(s.pointee.dups - dups0) skipped=\(s.pointee.skipped - skipped0)"
            line += " reordered=\(s.pointee.reordered - reordered0)"
            line +=
                " other=\(s.pointee.other - other0) reconnects=\(s.pointee.reconnects - reconnects0) pings=\(s.pointee.pings)"
            line += " rotations=\(s.pointee.rotations - rotations0)"
            line += " errors=\(s.pointee.errors - errors0) live=\(live)"
            if o.busyPoll && phase == "capacity" {
                line += " busy_poll=1 client_spin_pct=\(fixed(Double(s.pointee.idleNs) / 1e7 / secs, 1))"
            }
            line +=
                " client_cpu_pct=\(fixed(100 * (cpuUser + cpuSys) / secs, 1)) client_user_s=\(fixed(cpuUser, 2)) client_sys_s=\(fixed(cpuSys, 2))"
            if let a = w.server0, let b = w.server1 {
                line += " server_cpu_s=\(fixed(b - a, 2)) server_cpu_pct=\(fixed(100 * (b - a) / secs, 1))"
                line +=
                    " deliveries_per_server_cpu_s=\(b - a > 0 ? fixed(Double(windowDeliveries) / (b - a), 0) : "inf")"
            } else if !o.serverPids.isEmpty {
                line += " server_cpu_s=? server_cpu_pct=?"
            }
            line += " core_busy_pct=\(coreBusy(w.cores0, w.cores1))"
            if !softirqPids.isEmpty && w.softirq0.count == w.softirq1.count {
                let parts = softirqPids.enumerated().map { (k, t) -> String in
                    guard let a = w.softirq0[k], let b = w.softirq1[k] else { return "\(t.0):?" }
                    return "\(t.0):\(fixed(100 * (b - a) / secs, 1))"
                }
                line += " ksoftirqd_pct=\(parts.joined(separator: ","))"
            }
            writeStdout(line + "\n")
            if missing != 0 || s.pointee.errors != errors0 || s.pointee.dups != dups0 || live < n {
                warn(
                    "phase \(phase): \(missing) deliveries missing of \(expected), \(s.pointee.dups - dups0) duplicates, "
                        + "\(s.pointee.errors - errors0) errors, \(n - live) subscribers gone")
                failed = true
                break
            }
        }
        if s.pointee.foreign > 0 { warn("\(s.pointee.foreign) messages this run did not publish (ignored)") }
        closeAll()
        return failed || s.pointee.errors > 0 ? 1 : 0
    }

    /// WebSocket subscribers send a close frame and wait (2 s at most) for the server to close;
    /// HTTP connections just close.
    func closeAll() {
        let s = st
        s.pointee.mode = .off
        let closeFrame = maskedFrame(opcode: 8, payload: [0x03, 0xE8], key: rng.next())
        var closing = 0
        for i in 0..<total where conns[i].fd >= 0 {
            if conns[i].kind == .ws && conns[i].state == .open {
                send(i, closeFrame)
                if conns[i].fd >= 0 {
                    conns[i].state = .closing
                    closing += 1
                }
            } else {
                conns[i].state = .closing
                closeConn(i)
            }
        }
        if closing > 0 {
            let t = monotonicNanos()
            runUntil(t + 2_000_000_000) { s.pointee.live > 0 }
        }
        for i in 0..<total { closeConn(i) }
    }
}
