/// `/echo`: every text and binary message comes straight back. Stateless, so one instance
/// serves every connection (no allocation per connection).
public final class EchoDelegate: WebSocketDelegate, @unchecked Sendable {
    // Sendable: no state.
    public static let shared = EchoDelegate()

    public func webSocket(_ ws: WebSocketConnection, text: UnsafeRawBufferPointer) { ws.send(text: text) }
    public func webSocket(_ ws: WebSocketConnection, binary: UnsafeRawBufferPointer) { ws.send(binary: binary) }
}
