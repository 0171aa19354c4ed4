#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// An IPv4 or IPv6 address and port to connect to.
public struct SocketAddress: @unchecked Sendable, CustomStringConvertible {
    // @unchecked: sockaddr_storage is plain bytes.
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    public var family: Int32 { Int32(storage.ss_family) }

    /// A numeric IPv4 or IPv6 address (no name lookup), or nil.
    public static func numeric(host: String, port: Int) -> SocketAddress? {
        var a = SocketAddress()
        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeMutableBytes(of: &a.storage) { s in withUnsafeBytes(of: &v4) { s.copyMemory(from: $0) } }
            a.length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return a
        }
        if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port).bigEndian)
            withUnsafeMutableBytes(of: &a.storage) { s in withUnsafeBytes(of: &v6) { s.copyMemory(from: $0) } }
            a.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            return a
        }
        return nil
    }

    /// Looks `host` up with getaddrinfo (the first TCP address). **Blocks** for as long as the
    /// resolver takes (up to its timeout when DNS is down): call it off the loops
    /// (`resolve(host:port:on:_:)`).
    public static func lookUp(host: String, port: Int) throws(IOError) -> SocketAddress {
        if let a = numeric(host: host, port: port) { return a }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw IOError(errno: EHOSTUNREACH, function: "getaddrinfo \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(res) }
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if (ai.pointee.ai_family == AF_INET || ai.pointee.ai_family == AF_INET6), let sa = ai.pointee.ai_addr {
                var a = SocketAddress()
                withUnsafeMutableBytes(of: &a.storage) { s in
                    s.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: Int(ai.pointee.ai_addrlen)))
                }
                a.length = ai.pointee.ai_addrlen
                return a
            }
            p = ai.pointee.ai_next
        }
        throw IOError(errno: EHOSTUNREACH, function: "getaddrinfo \(host): no IPv4 or IPv6 address")
    }

    /// Resolves `host` without blocking `loop`: numeric addresses at once, names on a
    /// short-lived thread of their own; `done` runs on `loop`'s thread either way.
    public static func resolve(
        host: String, port: Int, on loop: EventLoop,
        _ done: @escaping @Sendable (Result<SocketAddress, IOError>) -> Void
    ) {
        if let a = numeric(host: host, port: port) {
            done(.success(a))
            return
        }
        let work: @Sendable () -> Void = {
            let r: Result<SocketAddress, IOError>
            do throws(IOError) { r = .success(try lookUp(host: host, port: port)) } catch { r = .failure(error) }
            loop.execute { done(r) }
        }
        // Unmanaged: one +1 reference carried through pthread_create's void*, taken back by the thread.
        let box = Unmanaged.passRetained(ThreadWork(work))
        var tid = pthread_t()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        let rc = pthread_create(
            &tid, &attr,
            { arg in
                let w = Unmanaged<ThreadWork>.fromOpaque(arg!).takeRetainedValue()
                halley_set_thread_name("halley-resolve")
                w.body()
                return nil
            }, box.toOpaque())
        pthread_attr_destroy(&attr)
        if rc != 0 {
            box.release()
            done(.failure(IOError(errno: rc, function: "pthread_create (resolver)")))
        }
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var s = storage
        let port: UInt16
        if family == AF_INET6 {
            port = withUnsafePointer(to: &s) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var a = p.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
                    return UInt16(bigEndian: p.pointee.sin6_port)
                }
            }
            return "[\(Self.text(buf))]:\(port)"
        }
        port = withUnsafePointer(to: &s) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                var a = p.pointee.sin_addr
                inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
                return UInt16(bigEndian: p.pointee.sin_port)
            }
        }
        return "\(Self.text(buf)):\(port)"
    }

    /// A NUL-terminated C buffer as text.
    static func text(_ buf: [CChar]) -> String {
        String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

final class ThreadWork {
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

extension Socket {
    /// A non-blocking TCP socket connecting to `address`, and whether it is connected already;
    /// if not, wait until it is writable, then read `connectError`.
    public static func connect(to address: SocketAddress) throws(IOError) -> (fd: Int32, connected: Bool) {
        let fd = socket(
            address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
            0)
        if fd < 0 { throw IOError(errno: errno, function: "socket") }
        var s = address.storage
        let rc = withUnsafePointer(to: &s) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, address.length) }
        }
        if rc == 0 { return (fd, true) }
        let e = errno
        // EINTR: the connect goes on in the background, as with EINPROGRESS (connect(2)).
        if e == EINPROGRESS || e == EINTR { return (fd, false) }
        Sys.close(fd)
        throw IOError(errno: e, function: "connect \(address)")
    }

    /// The result of a non-blocking connect once the socket is writable: 0 or an errno.
    public static func connectError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { return errno }
        return err
    }
}
