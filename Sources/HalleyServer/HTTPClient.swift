#if canImport(Glibc)
import Glibc
#endif
import HalleyCore
import HalleyHTTP
import HalleyLoop

/// Why a client request failed.
public enum HTTPClientError: Error, Sendable, CustomStringConvertible {
    case resolve(IOError)
    case connect(IOError)
    case connectTimeout(Int64)
    case timeout(Int64)
    case io(IOError)
    case response(HTTPResponseParseError)
    /// The caller cancelled it (`HTTPClient.Call.cancel`).
    case cancelled

    public var description: String {
        switch self {
        case .resolve(let e): return "name lookup failed: \(e)"
        case .connect(let e): return "\(e)"
        case .connectTimeout(let ms): return "no connection within \(ms) ms"
        case .timeout(let ms): return "no complete response within \(ms) ms"
        case .io(let e): return "\(e)"
        case .response(let e): return "\(e)"
        case .cancelled: return "cancelled"
        }
    }
}

/// The hub's own HTTP/1.1 client, on an event loop: one request per connection
/// (`Connection: close`), non-blocking connect, and two deadlines. Enough for webhooks;
/// no TLS, no redirects, no keep-alive.
public enum HTTPClient {
    public struct Options: Sendable {
        /// Milliseconds to establish the TCP connection. Default 5000.
        public var connectTimeoutMillis: Int64 = 5000
        /// Milliseconds for the whole request, from resolving the host to the last byte of
        /// the response. Default 10000; 0: none (a stream relayed for as long as it lasts).
        public var timeoutMillis: Int64 = 10_000
        public var limits = HTTPResponseParser.Limits()
        public init() {}
    }

    /// Sends `request` (whole request bytes, see `HTTPURL.request`) to `url` and calls `done`
    /// once, on `loop`'s thread. Call on `loop`'s thread. A host name is looked up on a
    /// thread of its own for every request (no cache).
    public static func send(
        on loop: EventLoop, url: HTTPURL, request: [UInt8], options: Options = Options(),
        _ done: @escaping (Result<HTTPClientResponse, HTTPClientError>) -> Void
    ) {
        let call = HTTPClientCall(loop: loop, request: request, options: options, done: done)
        let box = UncheckedBox(call)
        SocketAddress.resolve(host: url.host, port: url.port, on: loop) { r in box.value.resolved(r) }
    }

    /// A request whose response is passed on as it comes: `head` once the status and fields are
    /// read, `body` for every piece of the body (chunk framing removed), then `done` once (with
    /// the response and an empty body, or the failure). Call on `loop`'s thread; the
    /// callbacks run there. `Call.cancel()` ends it (the client it relays to went away).
    public static func stream(
        on loop: EventLoop, url: HTTPURL, request: [UInt8], options: Options = Options(),
        head: @escaping (Int, HTTPHeaders) -> Void, body: @escaping ([UInt8]) -> Void,
        done: @escaping (Result<HTTPClientResponse, HTTPClientError>) -> Void
    ) -> Call {
        let call = HTTPClientCall(loop: loop, request: request, options: options, done: done)
        call.onHead = head
        call.onBody = body
        let box = UncheckedBox(call)
        SocketAddress.resolve(host: url.host, port: url.port, on: loop) { r in box.value.resolved(r) }
        return Call(call)
    }

    /// A streamed request in flight. Loop-confined.
    public final class Call {
        let call: HTTPClientCall
        init(_ c: HTTPClientCall) { call = c }
        /// Closes the connection; `done` gets `cancelled` (nothing if it already ran).
        public func cancel() { call.finish(.failure(.cancelled)) }
    }
}

/// One request in flight. Loop-confined; kept alive by the loop's handler table while
/// registered and by its timers until it finishes.
final class HTTPClientCall: EventHandler {
    let loop: EventLoop
    let options: HTTPClient.Options
    var done: ((Result<HTTPClientResponse, HTTPClientError>) -> Void)?
    var request: [UInt8]
    var written = 0
    var fd: Int32 = -1
    var connected = false
    var parser: HTTPResponseParser
    var connectTimer: UInt64?
    var deadlineTimer: UInt64?
    /// Streaming (`HTTPClient.stream`): the head, then the body as it comes.
    var onHead: ((Int, HTTPHeaders) -> Void)?
    var onBody: (([UInt8]) -> Void)?

    init(
        loop: EventLoop, request: [UInt8], options: HTTPClient.Options,
        done: @escaping (Result<HTTPClientResponse, HTTPClientError>) -> Void
    ) {
        self.loop = loop
        self.request = request
        self.options = options
        self.done = done
        parser = HTTPResponseParser(limits: options.limits)
        guard options.timeoutMillis > 0 else { return }
        deadlineTimer = loop.schedule(afterMillis: options.timeoutMillis) { [self] in
            deadlineTimer = nil
            finish(.failure(.timeout(options.timeoutMillis)))
        }
    }

    func resolved(_ r: Result<SocketAddress, IOError>) {
        guard done != nil else { return }  // timed out while resolving
        switch r {
        case .failure(let e):
            finish(.failure(.resolve(e)))
        case .success(let address):
            do throws(IOError) {
                let (s, now) = try Socket.connect(to: address)
                fd = s
                connected = now
                Socket.setNoDelay(s)
                try loop.register(s, events: Events.writable | Events.readable | Events.readHangup, handler: self)
            } catch {
                finish(.failure(.connect(error)))
                return
            }
            if !connected {
                connectTimer = loop.schedule(afterMillis: options.connectTimeoutMillis) { [self] in
                    connectTimer = nil
                    finish(.failure(.connectTimeout(options.connectTimeoutMillis)))
                }
            }
        }
    }

    func handleEvent(_ events: UInt32) {
        guard done != nil else { return }
        if !connected {
            // RFC-less but classic: a non-blocking connect is over when the socket is writable
            // (or in error); SO_ERROR says how it went.
            let e = Socket.connectError(fd)
            if e != 0 {
                finish(.failure(.connect(IOError(errno: e, function: "connect"))))
                return
            }
            if events & (Events.writable | Events.error | Events.hangup) == 0 { return }
            connected = true
            if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        }
        if written < request.count && events & (Events.writable | Events.error | Events.hangup) != 0 {
            do throws(IOError) {
                _ = try Sys.writeAll(fd, request, from: &written)
            } catch {
                // The peer may have answered and closed early (a 413, a 500): read what is there.
                if !readAvailable() { finish(.failure(.io(error))) }
                return
            }
            if written == request.count {
                request = []
                loop.modify(fd, events: Events.readable | Events.readHangup)
            }
        }
        if events & (Events.readable | Events.readHangup | Events.hangup | Events.error) != 0 {
            _ = readAvailable()
        }
    }

    /// Reads until EAGAIN, EOF or a complete response; true when the call finished.
    func readAvailable() -> Bool {
        let buf = loop.readBuffer
        do throws(IOError) {
            while true {
                switch try Sys.read(fd, buf) {
                case .wouldBlock:
                    return false
                case .done(0):
                    do throws(HTTPResponseParseError) {
                        let r = try parser.finish()
                        passOn()
                        finish(.success(r))
                    } catch {
                        finish(.failure(.response(error)))
                    }
                    return true
                case .done(let n):
                    do throws(HTTPResponseParseError) {
                        let r = try parser.feed(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
                        passOn()
                        guard done != nil else { return true }  // the relay cancelled it
                        if let r {
                            finish(.success(r))
                            return true
                        }
                    } catch {
                        finish(.failure(.response(error)))
                        return true
                    }
                }
            }
        } catch {
            finish(.failure(.io(error)))
            return true
        }
    }

    /// Streaming: the head once, then what the body has so far.
    func passOn() {
        guard let onBody else { return }
        if let onHead, let h = parser.head {
            self.onHead = nil
            onHead(h.status, h.headers)
        }
        guard done != nil else { return }
        let b = parser.takeBody()
        if !b.isEmpty { onBody(b) }
    }

    func finish(_ r: Result<HTTPClientResponse, HTTPClientError>) {
        guard let d = done else { return }
        done = nil
        if let t = connectTimer { loop.cancel(t); connectTimer = nil }
        if let t = deadlineTimer { loop.cancel(t); deadlineTimer = nil }
        if fd >= 0 {
            loop.unregister(fd)
            Sys.close(fd)
            fd = -1
        }
        onHead = nil
        onBody = nil
        d(r)
    }
}
