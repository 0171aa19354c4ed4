/// A binary min-heap of one-shot timers for a loop's own timed work (not per-connection
/// deadlines: those are swept once a second). Cancelled timers are skipped when they surface.
struct TimerHeap {
    struct Entry {
        var deadline: Int64
        var id: UInt64
        var body: () -> Void
    }

    private var heap: [Entry] = []
    private var cancelled: Set<UInt64> = []
    private var nextId: UInt64 = 1

    var nextDeadline: Int64? {
        mutating get {
            while let top = heap.first, cancelled.contains(top.id) {
                cancelled.remove(top.id)
                _ = popTop()
            }
            return heap.first?.deadline
        }
    }

    mutating func push(deadline: Int64, _ body: @escaping () -> Void) -> UInt64 {
        let id = nextId
        nextId += 1
        heap.append(Entry(deadline: deadline, id: id, body: body))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if heap[parent].deadline <= heap[i].deadline { break }
            heap.swapAt(parent, i)
            i = parent
        }
        return id
    }

    mutating func cancel(_ id: UInt64) {
        if heap.contains(where: { $0.id == id }) { cancelled.insert(id) }
    }

    mutating func pop() -> (() -> Void)? {
        guard let e = popTop() else { return nil }
        if cancelled.remove(e.id) != nil { return nil }
        return e.body
    }

    private mutating func popTop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].deadline < heap[m].deadline { m = l }
            if r < heap.count && heap[r].deadline < heap[m].deadline { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}
