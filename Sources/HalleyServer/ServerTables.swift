import HalleyHTTP

/// Byte strings of every response, made once and kept for the life of the process: reading
/// one is a pointer copy, where a global `[UInt8]` costs a retain and a release each time.
enum ServerTables {
    static func immortal(_ text: String) -> UnsafeRawBufferPointer { immortal(Array(text.utf8)) }

    static func immortal(_ b: [UInt8]) -> UnsafeRawBufferPointer {
        let p = UnsafeMutableRawBufferPointer.allocate(byteCount: max(b.count, 1), alignment: 1)
        p.copyBytes(from: b)
        return UnsafeRawBufferPointer(rebasing: p[0..<b.count])
    }

    // nonisolated(unsafe): written once by the lazy global initializer, then only read.
    nonisolated(unsafe) static let statusLines: UnsafeBufferPointer<UnsafeRawBufferPointer> = {
        let t = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: 600)
        for i in 0..<600 { t[i] = immortal(HTTPStatus.statusLine(i)) }
        return UnsafeBufferPointer(t)
    }()
    nonisolated(unsafe) static let contentLengthPrefix = immortal("Content-Length: ")
    nonisolated(unsafe) static let connectionClose = immortal("Connection: close\r\n")
    nonisolated(unsafe) static let connectionKeepAlive = immortal("Connection: keep-alive\r\n")
    nonisolated(unsafe) static let crlf = immortal("\r\n")
    nonisolated(unsafe) static let transferChunked = immortal("Transfer-Encoding: chunked\r\n")
    nonisolated(unsafe) static let lastChunk = immortal("0\r\n\r\n")
}

/// The tables a response head is written from, held by each loop context: reading a global
/// `static let` goes through `swift_once` on every access (three per response).
struct ResponseTables {
    // Raw buffers: ServerTables' immortal bytes (allocated once, never freed), not owned here.
    let statusLines = ServerTables.statusLines
    let contentLengthPrefix = ServerTables.contentLengthPrefix
    let connectionClose = ServerTables.connectionClose
    let connectionKeepAlive = ServerTables.connectionKeepAlive
    let crlf = ServerTables.crlf
}
