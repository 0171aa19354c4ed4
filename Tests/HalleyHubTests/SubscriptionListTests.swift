import Testing

@testable import HalleyHub

/// `SubscriptionList` (the first subscription inline, the others in an array) behaves as an
/// array would: against one, after every append and every removal at every position.
@Suite struct SubscriptionListTests {
    func sub(_ n: Int) -> Session.Subscription {
        Session.Subscription(channel: LocalChannel(key: ChannelKey(app: "1", name: "c\(n)"), stats: nil), slot: n)
    }

    func names(_ l: SubscriptionList) -> [String] { l.map(\.channel.key.name) }

    @Test func behavesAsAnArray() {
        for size in 0...4 {
            for victim in 0..<max(size, 1) where size > 0 {
                var list = SubscriptionList()
                var array: [Session.Subscription] = []
                for n in 0..<size {
                    list.append(sub(n))
                    array.append(sub(n))
                    #expect(names(list) == array.map(\.channel.key.name))
                }
                list.remove(at: victim)
                array.remove(at: victim)
                #expect(names(list) == array.map(\.channel.key.name), "size \(size), removed \(victim)")
                #expect(list.count == array.count && list.isEmpty == array.isEmpty)
                if let i = list.firstIndex(where: { $0.channel.key.name == "c\(size - 1)" }), victim != size - 1 {
                    list[i].slot = 99
                    #expect(list[i].slot == 99)
                }
                list.append(sub(7))  // after removals, appends still go last
                #expect(names(list).last == "c7")
                list.removeAll()
                #expect(list.isEmpty && names(list) == [])
            }
        }
        var emptied = SubscriptionList()
        emptied.append(sub(1))
        emptied.remove(at: 0)
        emptied.append(sub(2))
        #expect(names(emptied) == ["c2"])
    }
}
