import HalleyProtocol

/// Why a subscription with `halley:since` could not recover what the client missed: the
/// `halley:reason` beside `"halley:recovered":false` (docs/PROTOCOL.md, "Subscribing").
enum RecoveryFailure: String, Sendable {
    /// The channel's epoch is not the client's (the hub restarted, or the channel was
    /// forgotten): its offsets mean nothing here.
    case epochChanged = "epoch_changed"
    /// Messages after the client's offset have left the history (`--history-size`,
    /// `--history-seconds`).
    case historyExpired = "history_expired"
}

/// Why a session lets go of its transport (`Transport.detach`).
package enum Detachment: Equatable, Sendable {
    /// Another transport of the same session took over (a resume, a new stream).
    case replaced
    /// The session ended.
    case ended(SessionEnd)

    /// The close code and text the transport's client gets: the end's Pusher error, else
    /// 1000 (normal closure, RFC 6455 §7.4.1).
    package var close: (code: UInt16, reason: String) {
        switch self {
        case .replaced: (1000, "replaced by a new connection")  // RFC 6455 normal closure
        case .ended(let end): end.pusherError ?? (1000, "")
        }
    }
}

/// Why a session ended: the `halley:reason` told to a client that tries to resume it, and the
/// Pusher error and close its transport gets (docs/PROTOCOL.md, "How a session ends").
package enum SessionEnd: String, Sendable {
    /// It outlived its transport by the resume window (also the answer for an id the hub does
    /// not know, or a token that does not match).
    case expired
    /// Its client went: a plain Pusher session's transport closed.
    case closed
    /// Its buffer bound was passed under `--slow-consumer close`.
    case bufferOverflow = "buffer_overflow"
    /// A pusher-js streaming session heard nothing from its client within the silence limit.
    case pingTimeout = "ping_timeout"
    /// The app's `terminate_connections`.
    case terminated
    /// A reload removed its app.
    case appRemoved = "app_removed"
    /// A reload disabled its app.
    case appDisabled = "app_disabled"
    /// The hub is draining (SIGTERM): reconnect at once, elsewhere.
    case shutdown

    /// The `pusher:error` (and close code) the session's transport gets; nil: none (the
    /// client is gone, or the session outlived it).
    package var pusherError: (code: UInt16, message: String)? {
        switch self {
        case .expired, .closed: nil
        case .bufferOverflow: (PusherErrorCode.overCapacity, "halley: session buffer full")
        case .pingTimeout: (PusherErrorCode.pongNotReceived, "Pong reply not received")
        case .terminated: (PusherErrorCode.connectionUnauthorized, "connection terminated by the app")
        case .appRemoved: (PusherErrorCode.applicationDoesNotExist, "Application does not exist")
        case .appDisabled: (PusherErrorCode.applicationDisabled, "Application disabled")
        case .shutdown: (PusherErrorCode.genericReconnect, "Server shutting down: reconnect")
        }
    }
}
