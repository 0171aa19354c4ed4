/// What every way of publishing checks of an event, in one place: `POST /publish`, the HTTP
/// API's `events` and `batch_events`, and client events (WebSocket, `POST /halley/send`,
/// pusher-js `xhr_send`). Names and data are counted in UTF-8 bytes (binary data after base64
/// decoding); the data limit is the app's `max_event_bytes`, else `--max-event-bytes`. Each
/// path words the refusal in its own protocol (an HTTP status, a `pusher:error`).
package enum EventProblem: Equatable {
    case noName
    case nameTooLong(limit: Int)
    case dataTooLarge(size: Int, limit: Int)

    /// The refusal's text, the same on every path.
    package var text: String {
        switch self {
        case .noName: return "missing event name"
        case .nameTooLong(let limit): return "event name is longer than \(limit) bytes"
        case .dataTooLarge(let size, let limit): return "event data is \(size) bytes; the limit is \(limit)"
        }
    }

    /// The HTTP status of a refusal by `POST /publish` or the HTTP API: 413 for data.
    package var status: Int {
        if case .dataTooLarge = self { return 413 }
        return 400
    }
}

extension HubConfig {
    package func eventProblem(app: App, name: String, dataBytes: Int) -> EventProblem? {
        if name.isEmpty { return .noName }
        if name.utf8.count > maxEventNameLength { return .nameTooLong(limit: maxEventNameLength) }
        let limit = app.maxEventBytes ?? maxEventBytes
        if dataBytes > limit { return .dataTooLarge(size: dataBytes, limit: limit) }
        return nil
    }
}
