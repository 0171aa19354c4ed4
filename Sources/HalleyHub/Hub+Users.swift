import HalleyCore
import HalleyProtocol

/// Signed-in users (`pusher:signin`, `terminate_connections`) and the webhooks the channel
/// table emits.
extension Hub {
    // MARK: users (`pusher:signin`)

    func signIn(_ user: UserKey, session: SessionID) {
        userSessions.withLock { _ = $0[user, default: []].insert(session) }
    }

    func signOut(_ user: UserKey, session: SessionID) {
        userSessions.withLock { users in
            users[user]?.remove(session)
            if users[user]?.isEmpty == true { users[user] = nil }
        }
    }

    /// Ends every session of a signed-in user (`POST /apps/{id}/users/{user}/terminate_connections`).
    /// Returns how many sessions were told.
    @discardableResult
    package func terminate(_ user: UserKey) -> Int {
        // A fresh array made under the lock: the set's storage stays with the lock. (A copy of
        // the set would share it, and the next `remove` on another loop decides whether to
        // write in place by a reference count that ThreadSanitizer cannot see.)
        let ids = userSessions.withLock { $0[user].map { Array($0) } ?? [] }
        let loops = self.loops
        for id in ids {
            let lh = loops[id.owner(loops: loops.count)]
            lh.loop.execute { lh.terminate(id) }
        }
        return ids.count
    }

    /// The presence user of a subscribed session.
    func presenceUser(_ key: ChannelKey, session: SessionID) -> String? {
        shard(key).withLock { $0.channels[key]?.userOf[session] }
    }

    // MARK: webhooks (called under the lock: `emit` only queues)

    func clientEventHook(_ app: App, channel: String, event: String, data: String, socketID: SessionID, userID: String?)
    {
        webhooks?.emit(
            app,
            .clientEvent(channel: channel, event: event, data: data, socketID: socketID.description, userID: userID))
    }

    func webhook(_ key: ChannelKey, _ event: WebhookEvent) {
        guard let w = webhooks, let app = app(id: key.app), !key.name.hasPrefix(LoopHub.userChannelPrefix) else {
            return
        }
        w.emit(app, event)
    }

    // With Redis, occupancy is the cluster's (`clusterOccupancy`): this node's first and last
    // subscribers say nothing.
    func occupied(_ key: ChannelKey) { if !clustered { webhook(key, .channelOccupied(channel: key.name)) } }
    func vacated(_ key: ChannelKey) { if !clustered { webhook(key, .channelVacated(channel: key.name)) } }

    /// With Redis: this node's change occupied (+1) or vacated (-1) the channel in the cluster.
    func clusterOccupancy(_ key: ChannelKey, _ change: Int) {
        if change > 0 { webhook(key, .channelOccupied(channel: key.name)) }
        if change < 0 { webhook(key, .channelVacated(channel: key.name)) }
    }
}
