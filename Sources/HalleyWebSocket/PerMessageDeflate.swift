import HalleyCore

/// permessage-deflate negotiation (RFC 7692 §7.1). The server always compresses each message
/// on its own (`server_no_context_takeover`, which a server may add to any accepted offer), so
/// one compressed copy of a broadcast can go to every subscriber and no connection needs a
/// compressor of its own. Unless told otherwise it also asks the client to compress each
/// message on its own (`client_no_context_takeover`, which a server may include in any
/// response, §7.1.1.2), so that no connection needs a decompressor of its own either: a
/// client that keeps its context costs the server zlib's state and a 32 KiB window, about
/// 40 KB, for as long as it is connected (browsers offer context takeover and then mostly
/// only receive).
public struct DeflateParameters: Equatable, Sendable {
    /// The client resets its compressor after every message: its messages can be inflated by
    /// a stream shared by the whole loop.
    public var clientNoContextTakeover = false
    /// Window the server compresses with (9…15).
    public var serverMaxWindowBits = 15
    /// Value of `client_max_window_bits` sent back, if any.
    public var clientMaxWindowBits: Int? = nil

    /// The `Sec-WebSocket-Extensions` value of the response.
    public var responseHeader: String {
        var s = "permessage-deflate; server_no_context_takeover"
        if clientNoContextTakeover { s += "; client_no_context_takeover" }
        if serverMaxWindowBits != 15 { s += "; server_max_window_bits=\(serverMaxWindowBits)" }
        if let c = clientMaxWindowBits { s += "; client_max_window_bits=\(c)" }
        return s
    }
}

public enum PerMessageDeflate {
    /// Accepts the first acceptable offer in the client's `Sec-WebSocket-Extensions` values,
    /// or nil. Offers with unknown or repeated parameters or out-of-range values are declined.
    /// `server_max_window_bits=8` is declined too: zlib's raw deflate turns a window of 8 into
    /// 9, which a client held to 256 bytes could not inflate.
    /// `clientContextTakeover`: let a client keep its compression context between messages
    /// when it does not offer `client_no_context_takeover` (else it is asked to).
    public static func negotiate(_ headerValues: [String], clientContextTakeover: Bool = false) -> DeflateParameters? {
        for offer in headerValues.joined(separator: ",").split(separator: ",") {
            let parts = offer.split(separator: ";").map { $0.trimmingSpaces() }
            guard parts.first?.lowercased() == "permessage-deflate" else { continue }
            if var p = accept(parts.dropFirst()) {
                if !clientContextTakeover { p.clientNoContextTakeover = true }
                return p
            }
        }
        return nil
    }

    static func accept(_ params: ArraySlice<String>) -> DeflateParameters? {
        var p = DeflateParameters()
        var seen = Set<String>()
        for raw in params {
            let kv = raw.split(separator: "=", maxSplits: 1).map { $0.trimmingSpaces() }
            let name = kv[0].lowercased()
            guard !name.isEmpty, seen.insert(name).inserted else { return nil }
            var value: Int? = nil
            if kv.count == 2 {
                var v = kv[1]
                if v.hasPrefix("\"") && v.hasSuffix("\"") && v.count >= 2 { v = String(v.dropFirst().dropLast()) }
                guard let n = Int(v), (8...15).contains(n), v.allSatisfy({ $0.isASCII && $0.isNumber }) else {
                    return nil
                }
                value = n
            }
            switch name {
            case "server_no_context_takeover":
                guard value == nil && kv.count == 1 else { return nil }
            case "client_no_context_takeover":
                guard value == nil && kv.count == 1 else { return nil }
                p.clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let v = value, v >= 9 else { return nil }
                p.serverMaxWindowBits = v
            case "client_max_window_bits":
                if kv.count == 2 && value == nil { return nil }
                p.clientMaxWindowBits = value
            default:
                return nil
            }
        }
        return p
    }
}

extension PerMessageDeflate {
    /// Appends `bytes` (at most 65535) to a message compressed with a sync flush whose
    /// 00 00 FF FF were kept, without running a compressor: a non-final DEFLATE stored block
    /// (RFC 1951 §3.2.4: header byte, LEN, NLEN, the bytes), then one zero byte that begins
    /// the empty stored block whose LEN/NLEN the receiver appends (RFC 7692 §7.2.2). Returns
    /// the bytes written (`bytes.count + 6`).
    public static func storedTail(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int {
        let n = bytes.count
        precondition(n <= 0xFFFF)
        out.storeBytes(of: 0, toByteOffset: 0, as: UInt8.self)  // BFINAL 0, BTYPE 00, padding
        out.storeBytes(of: UInt8(n & 0xFF), toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt8(n >> 8), toByteOffset: 2, as: UInt8.self)
        out.storeBytes(of: UInt8(~n & 0xFF), toByteOffset: 3, as: UInt8.self)
        out.storeBytes(of: UInt8((~n >> 8) & 0xFF), toByteOffset: 4, as: UInt8.self)
        if n > 0 { (out + 5).copyMemory(from: bytes.baseAddress!, byteCount: n) }
        out.storeBytes(of: 0, toByteOffset: 5 + n, as: UInt8.self)
        return 6 + n
    }
}
