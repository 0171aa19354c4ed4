import HalleyCore
import HalleyLoop
import HalleyProtocol
@testable import HalleyHub

/// The hub without sockets: a `Hub` on event loops that never run (each is stepped by hand,
/// on the test's thread, with a clock the test moves), and sessions attached to in-memory
/// transports. For the hub's behaviour (sessions, resume, gaps, presence, fan-out); the wire
/// stays with the integration tests.
final class HubHarness {
    let hub: Hub
    let loops: [EventLoop]
    /// Monotonic milliseconds of the loops' clock (from the real clock at the start: a loop's
    /// first tick is due a second after it was made).
    var now: Int64 = 0

    init(loops n: Int = 1, _ configure: (inout HubConfig) -> Void = { _ in }) throws {
        var c = HubConfig()
        configure(&c)
        hub = Hub(config: c)
        loops = try (0..<n).map { try EventLoop(index: $0, maxDescriptors: 64) }
        hub.attach(loops: loops)
        now = loops.map(\.now).max()! + 1000
        step()
    }

    var app: App { hub.config.apps[0] }

    /// One turn of every loop, `seconds` later.
    func step(seconds: Int = 0) {
        now += Int64(seconds) * 1000
        for l in loops { l.step(at: now) }
        for l in loops { l.step(at: now) }  // what one loop queued for another this turn
    }

    /// A new session on loop `loop` with a transport attached.
    func open(loop: Int = 0, resumable: Bool = true) -> (Session, MemoryTransport) {
        let lh = hub.loops[loop]
        let s = lh.newSession(app: app, resumable: resumable, client: IPAddress(v4: 0x7F00_0001))!
        let t = MemoryTransport()
        s.attach(t, lastSeen: nil)
        return (s, t)
    }

    /// A message from the client, as its transport would pass it on.
    func send(_ s: Session, _ json: String) {
        Array(json.utf8).withUnsafeBytes { s.handle(text: $0) }
        step()
    }

    func subscribe(_ s: Session, _ channel: String, channelData: String? = nil) {
        var data = #"{"channel":"\#(channel)""#
        if channel.hasPrefix("private-") || channel.hasPrefix("presence-") {
            let text = PusherAuth.channelString(socketID: s.id.description, channel: channel, channelData: channelData)
            data += #","auth":"\#(PusherAuth.token(key: app.key, secret: app.secret, text: text))""#
        }
        if let cd = channelData { data += #","channel_data":\#(quoted(cd))"# }
        send(s, #"{"event":"pusher:subscribe","data":\#(data)}}"#)
    }

    func quoted(_ text: String) -> String {
        var out: [UInt8] = []
        JSONWriter.writeString(text, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @discardableResult
    func publish(_ channel: String, _ event: String = "e", _ data: String) -> Hub.PublishResult {
        var result: Result<Hub.PublishResult, RedisError>? = nil
        hub.publish(app: app, channels: [channel], event: event, data: data, binary: nil, exclude: nil, loop: 0) {
            result = $0
        }
        step()
        // The memory broker answers before `publish` returns.
        guard case .success(let r) = result else { preconditionFailure("publish: \(String(describing: result))") }
        return r
    }
}

/// A transport that keeps what the session gives it. `bufferedBytes` is what the test says
/// the socket has not taken.
final class MemoryTransport: Transport {
    struct Sent {
        let seq: UInt64
        let json: JSONValue
        var event: String { json["event"]?.string ?? "" }
        var channel: String? { json["channel"]?.string }
        var data: String? { json["data"]?.string }
        var offset: UInt64? { json["halley:offset"]?.uint64 }
    }

    var kind = TransportKind.websocket
    var sent: [Sent] = []
    var controls: [JSONValue] = []
    var bufferedBytes = 0
    var detached: (code: UInt16, reason: String)?
    var detachment: Detachment?

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) {
        let json = Array(m.prefix.buffer) + Array("}".utf8)
        sent.append(Sent(seq: seq, json: try! JSONParser.parse(json)))
    }

    func sendControl(_ json: [UInt8]) { controls.append(try! JSONParser.parse(json)) }

    func detach(_ why: Detachment) {
        detachment = why
        detached = why.close
    }

    /// The events sent of `channel` that are not the hub's own (`pusher…`, `halley:…`).
    func events(_ channel: String) -> [Sent] {
        sent.filter { $0.channel == channel && !$0.event.hasPrefix("pusher") && !$0.event.hasPrefix("halley:") }
    }

    func sentEvents(_ name: String) -> [Sent] { sent.filter { $0.event == name } }
}
