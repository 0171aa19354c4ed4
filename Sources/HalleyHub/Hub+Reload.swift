import HalleyCore
import HalleyProtocol

/// What a reload changed, by app id.
public struct AppsReload: Sendable, Equatable {
    public var added: [String] = []
    public var removed: [String] = []
    public var changed: [String] = []
    /// Apps whose secret changed: the old one is accepted until the overlap ends.
    public var rotated: [String] = []

    public var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty }

    public var description: String {
        func list(_ ids: [String]) -> String { ids.isEmpty ? "none" : ids.joined(separator: ", ") }
        return "added \(list(added)), removed \(list(removed)), changed \(list(changed))"
            + (rotated.isEmpty ? "" : " (secret rotated: \(list(rotated)))")
    }
}

extension Hub {
    /// Replaces the apps with `new` (validated by the caller: SIGHUP re-reads the apps file).
    /// Connections of other apps are untouched. A removed app's sessions end with
    /// `pusher:error` 4001, a newly disabled app's with 4003; sessions of a changed app go on
    /// with its new settings. A changed secret leaves the old one accepted for
    /// `config.secretOverlap` seconds.
    @discardableResult
    public func reload(apps new: [App], now: Int = Clock.wallSeconds()) -> AppsReload {
        var summary = AppsReload()
        var next: [App] = []
        let table = appTable.withLock { t -> AppTable in
            let old = t
            for var a in new {
                if let o = old.byID[a.id] {
                    if a.secret != o.secret {
                        if config.secretOverlap > 0 {
                            a.previousSecret = o.secret
                            a.previousSecretUntil = now + config.secretOverlap
                        }
                        summary.rotated.append(a.id)
                    } else if o.previousSecret != nil, now < o.previousSecretUntil {
                        a.previousSecret = o.previousSecret
                        a.previousSecretUntil = o.previousSecretUntil
                    }
                    if !a.sameConfiguration(as: o) { summary.changed.append(a.id) }
                } else {
                    summary.added.append(a.id)
                }
                next.append(a)
            }
            let ids = Set(new.map(\.id))
            summary.removed = old.apps.map(\.id).filter { !ids.contains($0) }
            t = AppTable(next, counters: old.sessions, stats: old.stats)
            return t
        }
        let removed = Set(summary.removed)
        let changed = Dictionary(
            uniqueKeysWithValues: summary.changed.compactMap { id in table.byID[id].map { (id, $0) } })
        guard !removed.isEmpty || !changed.isEmpty else { return summary }
        for lh in loops {
            lh.loop.execute { lh.appsReloaded(changed: changed, removed: removed) }
        }
        return summary
    }
}

extension LoopHub {
    /// A reload's effect on this loop's sessions.
    func appsReloaded(changed: [String: App], removed: Set<String>) {
        loop.preconditionInLoop()
        // `end` removes from `live`: walk a copy.
        for s in live where !s.ended {
            if removed.contains(s.app.id) {
                Log.info("session \(s.id): app \(s.app.id) removed by a reload")
                end(s, .appRemoved)
            } else if let a = changed[s.app.id] {
                if !a.enabled {
                    end(s, .appDisabled)
                } else {
                    s.app = a
                }
            }
        }
    }
}

// MARK: drain (SIGTERM)

extension Hub {
    /// Tells every client of loop `index` to reconnect at once (elsewhere: the listeners are
    /// closing), answering held polls and ending streams, and refuses new sessions there.
    /// Runs on that loop, first thing of a graceful shutdown.
    public func drain(loop index: Int) {
        guard index < loops.count else { return }
        loops[index].drain()
    }
}

extension LoopHub {
    func drain() {
        loop.preconditionInLoop()
        draining = true
        let n = live.count
        for s in live where !s.ended {
            end(s, .shutdown)
        }
        if n > 0 { Log.info("loop \(index): shutting down, \(n) session\(n == 1 ? "" : "s") told to reconnect (4200)") }
    }
}
