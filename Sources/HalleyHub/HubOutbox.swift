import HalleyLoop
import HalleyServer

extension Hub {
    /// Per loop, what it must deliver: filled under the lock, queued under it (so every
    /// loop's inbox has a channel's messages in offset order), woken after it (no syscall
    /// under the lock).
    /// Its arrays are made on first use: a publish to a channel nobody here follows makes none.
    struct Outbox {
        let loops: Int
        private(set) var perLoop: [[(ChannelKey, Publication)]] = []
        private var wakes: [Bool] = []

        init(loops: Int) { self.loops = loops }

        mutating func add(_ loop: Int, _ key: ChannelKey, _ pub: Publication) {
            if perLoop.isEmpty { perLoop = Array(repeating: [], count: loops) }
            perLoop[loop].append((key, pub))
        }

        mutating func queue(to loops: [LoopHub]) {
            // By index: enumerating `perLoop` while emptying its entries copied it per call.
            for i in perLoop.indices where !perLoop[i].isEmpty {
                let items = perLoop[i]
                let lh = loops[i]
                let box = UncheckedBox(items)
                if wakes.isEmpty { wakes = Array(repeating: false, count: self.loops) }
                wakes[i] = lh.loop.enqueue { for (k, p) in box.value { lh.fanOutLater(k, p) } } || wakes[i]
                perLoop[i].removeAll()
            }
        }

        func wake(_ loops: [LoopHub]) {
            for (i, w) in wakes.enumerated() where w { loops[i].loop.wake() }
        }
    }
}
