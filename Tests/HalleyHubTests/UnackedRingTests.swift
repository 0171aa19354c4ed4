import Testing
@testable import HalleyHub

/// A resumable session's numbered messages: numbering, acknowledging (in full, in part, out of
/// range), what a resume resends, the byte count the buffer bound reads, and that a walk is a
/// snapshot.
@Suite struct UnackedRingTests {
    func message(_ n: Int) -> OutMessage { OutMessage(prefix: Array("{\"n\":\(n)".utf8)) }

    func walk(_ r: UnackedRing, after: UInt64) -> [UInt64] { r.after(after).map(\.seq) }

    @Test func numbersAcknowledgesAndResends() {
        var r = UnackedRing()
        #expect(walk(r, after: 0) == [] && r.count == 0 && r.bytes == 0)
        let ms = (1...10).map(message)
        for (k, m) in ms.enumerated() { #expect(r.append(m) == UInt64(k + 1)) }
        #expect(r.last == 10 && r.count == 10 && r.bytes == ms.reduce(0) { $0 + $1.size })
        #expect(walk(r, after: 0) == Array(1...10))
        #expect(walk(r, after: 7) == [8, 9, 10])
        #expect(walk(r, after: 10) == [] && walk(r, after: 99) == [])
        #expect(r.after(4).map { $0.message }.elementsEqual(ms[4...], by: ===))
        r.ack(upTo: 3)
        #expect(r.count == 7 && walk(r, after: 0) == Array(4...10))
        #expect(r.bytes == ms[3...].reduce(0) { $0 + $1.size })
        r.ack(upTo: 2)  // older than what is held: nothing
        #expect(r.count == 7)
        r.ack(upTo: 6)  // more than half acknowledged: compacted, the numbering unchanged
        #expect(walk(r, after: 0) == [7, 8, 9, 10] && walk(r, after: 8) == [9, 10])
        #expect(r.append(message(11)) == 11)
        r.ack(upTo: 50)  // past the last: everything
        #expect(r.count == 0 && r.bytes == 0 && r.last == 11)
        #expect(r.append(message(12)) == 12 && walk(r, after: 0) == [12])
        r.removeAll()
        #expect(r.count == 0 && r.bytes == 0 && r.last == 12 && walk(r, after: 0) == [])
    }

    @Test func aWalkIsASnapshot() {
        var r = UnackedRing()
        for n in 1...5 { _ = r.append(message(n)) }
        var seen: [UInt64] = []
        for (seq, _) in r.after(1) {
            seen.append(seq)
            if seq == 3 {
                r.ack(upTo: 5)  // as a transport's send that ends its session could
                _ = r.append(message(6))
            }
        }
        #expect(seen == [2, 3, 4, 5])
        #expect(walk(r, after: 0) == [6])
    }
}
