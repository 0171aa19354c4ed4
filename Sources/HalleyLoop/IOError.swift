#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: the environment tier of errors (programmer bugs trap; protocol
/// faults are small enums in their own modules).
public struct IOError: Error, CustomStringConvertible, Sendable {
    public let errno: Int32
    public let function: String

    public init(errno: Int32, function: String) {
        self.errno = errno
        self.function = function
    }

    public var description: String {
        "\(function): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// What a non-blocking call did: `.done(n)`, or `.wouldBlock` for EAGAIN. EINTR is retried.
public enum IOResult: Equatable, Sendable {
    case done(Int)
    case wouldBlock
}

@inline(__always)
func retrying(_ name: @autoclosure () -> String, _ body: () -> Int) throws(IOError) -> IOResult {
    while true {
        let r = body()
        if r >= 0 { return .done(r) }
        let e = errno
        if e == EINTR { continue }
        if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
        throw IOError(errno: e, function: name())
    }
}

/// Non-blocking socket calls with the errno policy above.
public enum Sys {
    public static func read(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(IOError) -> IOResult {
        try retrying("read", { Glibc.read(fd, buf.baseAddress, buf.count) })
    }

    /// `recv` on a socket: the same as `read` without the file layer's part of the call.
    public static func recv(_ fd: Int32, _ buf: UnsafeMutableRawBufferPointer) throws(IOError) -> IOResult {
        try retrying("recv", { Glibc.recv(fd, buf.baseAddress, buf.count, 0) })
    }

    /// `send` of one buffer on a socket (MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE):
    /// cheaper than a `writev` of one iovec, which goes through the file layer.
    public static func send(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(IOError) -> IOResult {
        try retrying("send", { Glibc.send(fd, buf.baseAddress, buf.count, Int32(MSG_NOSIGNAL)) })
    }

    public static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>, _ count: Int) throws(IOError) -> IOResult {
        try retrying("writev", { Glibc.writev(fd, iov, Int32(count)) })
    }

    public static func write(_ fd: Int32, _ buf: UnsafeRawBufferPointer) throws(IOError) -> IOResult {
        try retrying("write", { Glibc.write(fd, buf.baseAddress, buf.count) })
    }

    /// Writes `bytes` from `offset` on until they are all written or the socket would block,
    /// moving `offset` past what went. True when everything is written.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], from offset: inout Int) throws(IOError) -> Bool {
        while offset < bytes.count {
            let r = bytes.withUnsafeBytes { b in
                Result { () throws(IOError) in try write(fd, UnsafeRawBufferPointer(rebasing: b[offset...])) }
            }
            guard case .done(let n) = try r.get() else { return false }
            offset += n
        }
        return true
    }

    public static func sendfile(_ out: Int32, _ inFd: Int32, offset: inout Int, count: Int) throws(IOError) -> IOResult
    {
        var off = off_t(offset)
        let r = try retrying("sendfile", { Glibc.sendfile(out, inFd, &off, count) })
        offset = Int(off)
        return r
    }

    public static func close(_ fd: Int32) {
        // Linux releases the descriptor even when close fails with EINTR: never retry.
        _ = Glibc.close(fd)
    }
}
