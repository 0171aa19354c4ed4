import HalleyProtocol

/// libFuzzer entry for the SockJS dialect of pusher-js's HTTP transports:
/// - an `xhr_send` body (client bytes): parsed, then every message it carries is framed the way
///   the hub frames messages (`a[...]`, escaped to ASCII) and read back by the frame reader:
///   the reader must return exactly those strings;
/// - the same bytes as a receive stream, fed to the frame reader whole and split at a point
///   the input chooses: both ways must agree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    if let messages = try? SockJS.parseSendBody(bytes) {
        let frame = SockJS.messages(messages.map { SockJS.quoted(Array($0.utf8)) })
        if frame.contains(where: { $0 >= 0x80 }) { fatalError("a frame must be ASCII") }
        var r = SockJSFrameReader()
        let back: [SockJSFrame]
        do { back = try r.feed(frame) } catch { fatalError("the hub's own frame does not read back: \(error)") }
        if back != [.messages(messages)] { fatalError("messages changed on the way: \(messages) -> \(back)") }
    }
    var whole = SockJSFrameReader()
    var split = SockJSFrameReader()
    let cut = size > 0 ? Int(bytes[0]) % (size + 1) : 0
    let a = Result { () throws(SockJSFrameReader.ReadError) in try whole.feed(bytes) }
    let b = Result { () throws(SockJSFrameReader.ReadError) in try split.feed(bytes[..<cut]) + split.feed(bytes[cut...])
    }
    switch (a, b) {
    case (.success(let x), .success(let y)):
        if x != y { fatalError("reader disagrees with itself when split at \(cut)") }
        if whole.atLineBoundary != split.atLineBoundary { fatalError("line boundary differs when split at \(cut)") }
    case (.failure, .failure): break
    default:
        // The whole feed fails at the first bad line; the split one may fail earlier only if
        // the bad line ends before the cut, which the whole feed would have hit too.
        fatalError("reader succeeds one way and fails the other when split at \(cut)")
    }
    return 0
}
